"""python -m mailflow_web: Settings() from the environment -> logging -> run."""

import asyncio

from mailflow import log
from mailflow_web import app
from mailflow_web.settings import Settings


def main() -> None:
    settings = Settings()
    log.setup("web", settings.log_level, settings.log_format)
    asyncio.run(app.run(settings))


if __name__ == "__main__":
    main()
