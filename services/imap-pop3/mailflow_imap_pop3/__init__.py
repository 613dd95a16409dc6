"""imap-pop3: serves each user's mailboxes to mail clients over IMAP4rev1 (with push) and POP3."""
