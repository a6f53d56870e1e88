"""Copier task: pin the rendered service's dependencies in uv.lock.

Usage: python lock.py

Copier runs this in the service's directory after `copier copy` and `copier update` (see `_tasks` in
copier.yml). The Dockerfile installs with `uv sync --frozen`, so the lock is what makes its builds
reproducible. With an existing lock, `uv lock` keeps every pin that still fits pyproject.toml.

A fresh lock comes from uv's cache when the cache knows every package (a fraction of a second, where
asking the index again takes seconds: the template's tests render dozens of times), else from the
index. Newer releases arrive through `uv lock --upgrade` or Renovate's weekly lock maintenance.
"""

from __future__ import annotations

import shutil
import subprocess
import sys


def main() -> int:
    uv = shutil.which("uv")
    if uv is None:
        print("uv is not on PATH: run `make install` (it locks) before building the image", file=sys.stderr)
        return 0
    offline = subprocess.run([uv, "lock", "--quiet", "--offline"], capture_output=True, text=True)
    if offline.returncode == 0:
        return 0
    result = subprocess.run([uv, "lock", "--quiet"], capture_output=True, text=True)
    if result.returncode != 0:
        # A render without the package index still succeeds; `make install` locks once it is reachable.
        print(f"`uv lock` failed; run it once the package index is reachable:\n{result.stderr}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
