"""mailbox-store: keeps users, mailboxes and messages, and answers delivery, imap-pop3 and the admin over REST."""
