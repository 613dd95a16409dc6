"""delivery: takes delivery jobs and puts each message into a local mailbox or hands it to a remote MX."""
