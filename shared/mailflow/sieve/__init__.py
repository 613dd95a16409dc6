"""Sieve (RFC 5228) for Mailflow: `script` checks a script and builds its tree (sievelib parses),
`interpret` runs it on a message. Both pure; ManageSieve and delivery use the same two."""
