"""`python -m <package>` / the console script: serve the app with uvicorn."""

from __future__ import annotations

import uvicorn

from .app import create_app
from .platform.logs import configure_logging
from .settings import Settings


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_format)
    # log_config=None: uvicorn's own records go through the same handler (and format) as the service's.
    # proxy_headers=False: the client address is the TCP peer, never an X-Forwarded-For value, which anyone
    # can send; trusted-header auth (auth=none) decides on that address.
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        log_config=None,
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
