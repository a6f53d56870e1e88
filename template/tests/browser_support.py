"""What the browser tests share: the tools they need (or a skip that names what is missing), the user's cache
directory where npm installs and builds are made once, and a static origin to serve a page from."""

from __future__ import annotations

import fcntl
import hashlib
import http.server
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

BROWSER_DIR = Path(__file__).parent / "browser"
MIN_NODE_MAJOR = 20  # playwright-core's minimum; Debian 12's nodejs is 18


@dataclass(frozen=True)
class BrowserTools:
    node: str
    npm: str
    chromium: str


def tool(*names: str) -> str:
    for name in names:
        if found := shutil.which(name):
            return found
    pytest.skip(f"the browser tests need {' or '.join(names)} on PATH (Debian: apt-get install chromium nodejs npm)")


def browser_tools() -> BrowserTools:
    """node, npm and the system's chromium (never a downloaded one), or a skip that says which is missing."""
    node, npm, chromium = tool("node"), tool("npm"), tool("chromium", "chromium-browser")
    version = subprocess.run([node, "-p", "process.versions.node"], capture_output=True, text=True).stdout
    if int(version.split(".")[0]) < MIN_NODE_MAJOR:
        pytest.skip(f"the browser tests need Node {MIN_NODE_MAJOR}+ (playwright-core's minimum); this one is {version}")
    return BrowserTools(node, npm, chromium)


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "langgraph-service-browser-test"


def cached(name: str, recipe: bytes, make: Callable[[Path], None]) -> Path:
    """A directory made once per recipe by `make(scratch)` and kept in the user's cache, so that every later
    run and render reuses it. One maker at a time (parallel renders share the cache), into a scratch
    directory renamed at the end: a run that dies half way leaves nothing a later run would trust."""
    target = cache_root() / f"{name}-{hashlib.sha256(recipe).hexdigest()[:16]}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_dir():
            scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=".making-"))
            try:
                make(scratch)
            except BaseException:
                shutil.rmtree(scratch, ignore_errors=True)
                raise
            scratch.rename(target)
    return target


def npm_install(npm: str, where: Path, what: str) -> None:
    install = [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"]
    done = subprocess.run(install, cwd=where, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"npm install of {what} failed (registry reachable?):\n{done.stderr}")


def driver_packages(npm: str) -> Path:
    """node_modules for tests/browser/package.json (the JS SDK, esbuild, playwright-core), once per version of
    that file."""
    manifest = (BROWSER_DIR / "package.json").read_bytes()

    def install(scratch: Path) -> None:
        (scratch / "package.json").write_bytes(manifest)
        npm_install(npm, scratch, "tests/browser/package.json")

    return cached("driver", manifest, install) / "node_modules"


@contextmanager
def static_site(root: Path) -> Iterator[str]:
    """The page's own origin: a static file server on another loopback port."""

    class Files(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
