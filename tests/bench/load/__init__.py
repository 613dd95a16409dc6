"""Mailflow's own load generators: standard library and asyncio only, loopback targets only.

Run from the repository root, with any Python 3.11 (the tools need nothing else installed):

    python3 -m tests.bench.load.smtp_ingest  --port 2025 -n 20000 -c 20
    python3 -m tests.bench.load.e2e_latency  --port 2025 --imap-port 2143 --mode poll
    python3 -m tests.bench.load.imap_fetch   --port 2143 --fill --first-user 80 --rounds 20
    python3 -m tests.bench.load.imap_logins  --port 2143 --first-user 80 --rounds 100
    python3 -m tests.bench.load.pop3_retr    --port 2110 --first-user 80 --rounds 20

Each prints one JSON line with its figures; `--help` lists the options. The workloads and figure names
are those of the peer baseline (Postfix + Dovecot) the README compares with, so a figure measured
here with one of these tools stands beside one measured there.
"""
