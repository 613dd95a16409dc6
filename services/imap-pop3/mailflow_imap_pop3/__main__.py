"""python -m mailflow_imap_pop3: Settings() from the environment -> logging -> uvloop -> run."""

import asyncio

from mailflow import log
from mailflow_imap_pop3 import app
from mailflow_imap_pop3.settings import Settings


def main() -> None:
    settings = Settings()
    log.setup("imap-pop3", settings.log_level, settings.log_format)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(app.run(settings))
    else:
        uvloop.run(app.run(settings))


if __name__ == "__main__":
    main()
