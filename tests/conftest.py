"""Shared fixtures of the template's tests, and the matrix summary table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .helpers import ROOT, make_template_repo


@pytest.fixture(scope="session")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_template_repo(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    path = Path(os.environ.get("TEMPLATE_TEST_CACHE", ROOT / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    results: dict[str, str] = {}
    for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", []):
        if "test_matrix.py::test_combination" in report.nodeid and report.when == "call":
            results[report.nodeid.split("[", 1)[1].rstrip("]")] = f"{report.outcome} ({report.duration:.0f}s)"
    if results:
        terminalreporter.section("matrix: combination -> result")
        for combination, outcome in sorted(results.items()):
            terminalreporter.write_line(f"{combination:<60} {outcome}")
