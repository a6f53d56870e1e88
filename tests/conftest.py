"""Shared fixtures of the template's tests, and the matrix summary table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .checks import DEPENDENCY_PROBES, shared_env
from .paths import ROOT
from .rendering import make_template_repo, render


@pytest.fixture(scope="session")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_template_repo(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    path = Path(os.environ.get("TEMPLATE_TEST_CACHE", ROOT / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def project_python(template_repo: Path, tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """The shared virtualenv's python, with the dependencies of every render (DEPENDENCY_PROBES): the
    matrix and the update tests run the rendered projects' checks with it, built once per worker."""
    probes = [render(template_repo, tmp_path_factory.mktemp("deps"), data) for data in DEPENDENCY_PROBES]
    return shared_env(probes, cache_dir)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """TEMPLATE_TEST_SHARD=k/n keeps every n-th test from the k-th (the template's sharded CI)."""
    if not (shard := os.environ.get("TEMPLATE_TEST_SHARD")):
        return
    index, count = (int(part) for part in shard.split("/"))
    if not 1 <= index <= count:
        raise pytest.UsageError(f"TEMPLATE_TEST_SHARD={shard}: type k/n with 1 <= k <= n, such as 2/4")
    kept = [item for number, item in enumerate(items) if number % count == index - 1]
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = kept


PHASES = ("render", "ruff", "mypy", "fast tier", "heavy tier", "all tiers", "update", "newcomer", "validators")


def phase_timings(reports: list[pytest.TestReport]) -> dict[str, list[tuple[float, float]]]:
    """(start, seconds) of each phase: the matrix tests record their steps, other tests count whole."""
    phases: dict[str, list[tuple[float, float]]] = {}
    for report in reports:
        recorded = dict(report.user_properties).get("timings")
        if recorded:
            for phase, start, seconds in recorded:  # type: ignore[attr-defined]
                phases.setdefault(phase, []).append((start, seconds))
            continue
        module = report.nodeid.split("::", 1)[0].removeprefix("tests/test_").removesuffix(".py")
        # test_update_redesign and its like count as the phase their name starts with.
        phase = next((name for name in PHASES if module == name or module.startswith(f"{name}_")), "template checks")
        phases.setdefault(phase, []).append((report.start, report.duration))
    return phases


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    reports = [
        report
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if isinstance(report, pytest.TestReport) and report.when == "call"
    ]
    if not reports:
        return
    matrix = {
        report.nodeid.split("::", 1)[1]: f"{report.outcome} ({report.duration:.0f}s)"
        for report in reports
        if report.nodeid.startswith("tests/test_matrix.py::test_") and "[" in report.nodeid
    }
    if matrix:
        terminalreporter.section("matrix: combination -> result")
        for name, outcome in sorted(matrix.items()):
            terminalreporter.write_line(f"{name:<75} {outcome}")
    phases = phase_timings(reports)
    terminalreporter.section("phases (wall: first start to last end; busy: summed over workers)")
    terminalreporter.write_line(f"{'phase':<16} {'runs':>5} {'wall s':>8} {'busy s':>8} {'avg s':>7}")
    order = [*PHASES, "template checks"]
    for phase in sorted(phases, key=lambda name: order.index(name) if name in order else len(order)):
        spans = phases[phase]
        wall = max(start + seconds for start, seconds in spans) - min(start for start, _ in spans)
        busy = sum(seconds for _, seconds in spans)
        terminalreporter.write_line(f"{phase:<16} {len(spans):>5} {wall:>8.0f} {busy:>8.0f} {busy / len(spans):>7.1f}")
    everything = [span for spans in phases.values() for span in spans]
    total = max(start + seconds for start, seconds in everything) - min(start for start, _ in everything)
    terminalreporter.write_line(f"{'tests, in all':<16} {len(reports):>5} {total:>8.0f}")
    heavy = sorted(name for name in matrix if name.startswith("test_heavy_tier["))
    if heavy:
        chosen = "every one" if os.environ.get("TEMPLATE_TEST_FULL") == "1" else "default, richest, pairwise cover"
        terminalreporter.write_line(f"heavy tier ran on {len(heavy)} combinations ({chosen}):")
        for name in heavy:
            terminalreporter.write_line(f"  {name.removeprefix('test_heavy_tier[').rstrip(']')}")
