"""python -m mailflow_imap_pop3: Settings() from the environment -> logging -> run."""

import asyncio

from mailflow import log

from mailflow_imap_pop3 import app
from mailflow_imap_pop3.settings import Settings


def main() -> None:
    settings = Settings()
    log.setup("imap-pop3", settings.log_level, settings.log_format)
    asyncio.run(app.run(settings))


if __name__ == "__main__":
    main()
