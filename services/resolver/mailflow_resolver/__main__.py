"""python -m mailflow_resolver: Settings() from the environment -> logging -> run."""

import asyncio

from mailflow import log
from mailflow_resolver import app
from mailflow_resolver.settings import Settings


def main() -> None:
    settings = Settings()
    log.setup("resolver", settings.log_level, settings.log_format)
    asyncio.run(app.run(settings))


if __name__ == "__main__":
    main()
