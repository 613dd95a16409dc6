"""python -m mailflow_mailbox_store: Settings() from the environment -> logging -> run."""

import asyncio

from mailflow import log
from mailflow_mailbox_store import app
from mailflow_mailbox_store.settings import Settings


def main() -> None:
    settings = Settings()
    log.setup("mailbox-store", settings.log_level, settings.log_format)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # uvicorn[standard] brings it; the stdlib loop works too
        pass
    asyncio.run(app.run(settings))


if __name__ == "__main__":
    main()
