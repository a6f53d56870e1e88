"""`python -m <package>` / the console script: serve the app with uvicorn, in one or several processes."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

import uvicorn

from .app import create_app
from .platform.core.database import embedded_database_url
from .platform.core.logs import configure_logging
from .settings import Settings


def cpu_limit(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this container may use: its cgroup v2 CPU quota, else the CPUs the process may run on."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, math.ceil(int(quota) / int(period))))


def worker_app() -> Any:
    """The app of one worker process: uvicorn starts each afresh, so its logging is set up here too."""
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    return create_app(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the agent service.")
    parser.add_argument("--workers", type=int, help="worker processes (default: WEB_CONCURRENCY, else the CPU limit)")
    args = parser.parse_args()
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    workers = args.workers or settings.web_concurrency or cpu_limit()
    # log_config=None: uvicorn's own records go through the same handler (and format) as the service's.
    # proxy_headers=False: the client address is the TCP peer, never an X-Forwarded-For value, which anyone
    # can send; trusted-header auth (auth=none) decides on that address.
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level.lower(),
        "log_config": None,
        "proxy_headers": False,
    }
    # The lifespan's connection budget counts the processes: tell every one of them how many there are.
    os.environ["WEB_CONCURRENCY"] = str(workers)
    if workers == 1:
        uvicorn.run(create_app(settings.model_copy(update={"web_concurrency": 1})), **options)
        return
    if settings.database_url is None:
        # One embedded server and one thread ID secret for every worker: settled here, before they start.
        os.environ["THREAD_ID_SECRET"] = settings.resolved_thread_id_secret().decode()
        os.environ["DATABASE_URL"] = embedded_database_url(settings)
    uvicorn.run(f"{__package__}.__main__:worker_app", factory=True, workers=workers, **options)


if __name__ == "__main__":
    main()
