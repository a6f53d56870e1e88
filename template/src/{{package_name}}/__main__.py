"""`python -m <package>` / the console script: serve the app with uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from .app import create_app
from .settings import Settings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    # proxy_headers=False: the client address is the TCP peer, never an X-Forwarded-For value, which anyone
    # can send; trusted-header auth (auth=none) decides on that address.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info", proxy_headers=False)


if __name__ == "__main__":
    main()
