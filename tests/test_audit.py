"""pip-audit on the richest render's locked dependencies, once (the rendered CI runs it on every push).

Skipped, with the reason in the summary, when PyPI's vulnerability data cannot be reached: offline the
test costs one failed connection.
"""

from __future__ import annotations

import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from .combinations import richest_combination
from .rendering import render

# pip-audit's default vulnerability service is PyPI's JSON API.
VULNERABILITY_SERVICE = "https://pypi.org/pypi/pip/json"


def test_richest_render_locks_no_known_vulnerability(template_repo: Path, tmp_path: Path) -> None:
    try:
        urllib.request.urlopen(VULNERABILITY_SERVICE, timeout=5).close()
    except OSError as exc:
        reason = f"dependency audit not run: the vulnerability service {VULNERABILITY_SERVICE} is unreachable ({exc})"
        print(reason)
        pytest.skip(reason)
    project = render(template_repo, tmp_path / "project", richest_combination())
    result = subprocess.run(["make", "audit"], cwd=project, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"pip-audit found problems:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    export = ["uv", "export", "--frozen", "--no-emit-project", "--no-header", "--format", "requirements-txt"]
    locked = subprocess.run(export, cwd=project, capture_output=True, text=True, check=True).stdout
    versions = len(re.findall(r"^[A-Za-z0-9_.-]+==", locked, re.MULTILINE))
    unaudited = (result.stdout + result.stderr).count("could not be audited")
    if versions and unaudited >= versions:
        # A vulnerability service that knows none of the locked versions (a private mirror's): nothing was checked.
        reason = f"dependency audit not run: the vulnerability service knows none of the {versions} locked versions"
        print(reason)
        pytest.skip(reason)
