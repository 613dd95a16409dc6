"""python -m mailflow_delivery: Settings() from the environment -> logging -> uvloop -> run."""

import asyncio

from mailflow import log
from mailflow_delivery import app
from mailflow_delivery.settings import Settings


def main() -> None:
    settings = Settings()
    log.setup("delivery", settings.log_level, settings.log_format)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(app.run(settings))
    else:
        uvloop.run(app.run(settings))


if __name__ == "__main__":
    main()
