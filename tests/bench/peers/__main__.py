"""`python -m tests.bench.peers up [--dir D]` starts the peers and prints their ports as JSON;
`python -m tests.bench.peers down --dir D` stops them and removes D. For running the load tools by
hand against Postfix + Dovecot (`make bench` starts and stops them itself)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tests.bench.peers import Peers, missing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("action", choices=("up", "down"))
    p.add_argument(
        "--dir", type=Path, help="where the peers live (up: a new temporary directory if not given)"
    )
    p.add_argument("--users", type=int, default=100)
    p.add_argument(
        "--login-mode", choices=("stock", "performance"), default="stock", help="Dovecot's login processes"
    )
    a = p.parse_args(argv)
    if a.action == "up":
        if lacking := missing():
            sys.exit(
                "the peers need "
                + ", ".join(lacking)
                + " (tests/bench/peers/install.sh installs the packages)"
            )
        if a.dir:
            a.dir.mkdir(parents=True, exist_ok=True)
        peers = Peers(a.users, a.login_mode, root=a.dir).start()
        ports = peers.ports
        print(json.dumps({"dir": str(peers.root), "smtp": ports.smtp, "imap": ports.imap, "pop3": ports.pop3,
                          "postfix_pid": peers.postfix.pid, "dovecot_pid": peers.dovecot.pid}))  # fmt: skip
        return 0
    if not a.dir:
        sys.exit("down needs --dir (printed by up)")
    Peers(root=a.dir).stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
