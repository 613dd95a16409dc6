"""python -m mailflow.certs [--once]: Settings() from the environment -> logging -> the renewer.

Without --once it runs until SIGTERM/SIGINT. With --once it makes one check (ordering if due) and exits
0 when the installed certificate is current or was renewed, 1 when the order failed. Exit status 2 with
the reason on stderr for a configuration that cannot work (no directory, no paths, no names, a port that
cannot be bound).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from mailflow import log
from mailflow.certs import order
from mailflow.certs.renewer import Renewer
from mailflow.certs.settings import Settings
from mailflow.lifecycle import Stopper

logger = logging.getLogger("mailflow.certs")


async def serve(renewer: Renewer, once: bool) -> int:
    try:
        await renewer.start()
    except OSError as e:
        print(f"certs: cannot listen for the {renewer.settings.challenge} challenge: {e}", file=sys.stderr)
        return 2
    try:
        if once:
            try:
                outcome = await asyncio.to_thread(renewer.check)
            except (order.OrderFailed, OSError) as e:
                logger.error("certificate order failed; the installed certificate is kept: %s", e)
                return 1
            logger.info("certificate check: %s", outcome.value)
            return 0
        await renewer.run(Stopper().install())
        return 0
    finally:
        await renewer.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mailflow.certs", description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="one check (and order if due), then exit")
    args = parser.parse_args(argv)
    settings = Settings()
    log.setup("certs", settings.log_level, settings.log_format)
    try:
        renewer = Renewer(settings)
    except ValueError as e:
        print(f"certs: {e}", file=sys.stderr)
        return 2
    return asyncio.run(serve(renewer, args.once))


if __name__ == "__main__":
    sys.exit(main())
