"""python -m mailflow_delivery: Settings() from the environment -> logging -> run."""

import asyncio

from mailflow import log
from mailflow_delivery import app
from mailflow_delivery.settings import Settings


def main() -> None:
    settings = Settings()
    log.setup("delivery", settings.log_level, settings.log_format)
    asyncio.run(app.run(settings))


if __name__ == "__main__":
    main()
