"""Certificates from an ACME server (RFC 8555), obtained and renewed by one process: `python -m mailflow.certs`.

It writes the chain and key to MAILFLOW_TLS_CERT / MAILFLOW_TLS_KEY, the files every TLS listener reads,
proving the names by HTTP-01 or TLS-ALPN-01 on listeners of its own. Run exactly one per installation
(one per shared TLS folder); the services only read. Off unless MAILFLOW_ACME_DIRECTORY is set.

    settings.py    MAILFLOW_ACME_* settings
    files.py       is the installed pair due; atomic writes; the account key
    challenges.py  the HTTP-01 and TLS-ALPN-01 responders
    order.py       one order with certbot's `acme` library
    renewer.py     the loop: check, order when due, retry with backoff, sleep
"""
