"""Render every combination of the behaviour-changing options, lint it, and run its own tests: the fast
tier on each combination the tests can tell apart, the heavy tier on a pairwise cover (both everywhere
under `make test-full`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pytest

from .checks import FAST, HEAVY, NO_TESTS, Timing, run_project_checks, timed
from .combinations import all_combinations, combination_id, fast_tier_combinations, heavy_combinations, rotated_out
from .rendering import render

# `make test-full` sets this: every tier on every combination.
FULL = os.environ.get("TEMPLATE_TEST_FULL") == "1"
COMBINATIONS = all_combinations()
HEAVY_COMBINATIONS = COMBINATIONS if FULL else heavy_combinations()
FAST_COMBINATIONS = COMBINATIONS if FULL else fast_tier_combinations()


class CheckCombination(Protocol):
    def __call__(self, data: dict[str, Any], tier: str, lint: bool, skip_modules: tuple[str, ...] = ()) -> None: ...


@pytest.fixture
def check_combination(
    template_repo: Path,
    project_python: Path,
    tmp_path: Path,
    cache_dir: Path,
    record_property: Callable[[str, object], None],
) -> CheckCombination:
    """Render one combination, then run its lint (when asked) and one tier of its own tests."""

    def check(data: dict[str, Any], tier: str, lint: bool, skip_modules: tuple[str, ...] = ()) -> None:
        timings: list[Timing] = []
        record_property("timings", timings)  # filled in as the steps run, so a failed step's time counts too
        with timed(timings, "render"):
            project = render(template_repo, tmp_path / "service", data)
        run_project_checks(project, project_python, cache_dir, timings, tier=tier, lint=lint, skip_modules=skip_modules)

    return check


# Collected first, so that xdist starts the longest tests first and the run ends evenly.
@pytest.mark.parametrize("data", HEAVY_COMBINATIONS, ids=[combination_id(c) for c in HEAVY_COMBINATIONS])
def test_heavy_tier(data: dict[str, Any], check_combination: CheckCombination) -> None:
    skipped = () if FULL else rotated_out(HEAVY_COMBINATIONS.index(data), HEAVY_COMBINATIONS)
    check_combination(data, HEAVY, lint=False, skip_modules=skipped)


@pytest.mark.parametrize("data", COMBINATIONS, ids=[combination_id(c) for c in COMBINATIONS])
def test_combination(data: dict[str, Any], check_combination: CheckCombination) -> None:
    """Lint and types on every combination; the fast tier on each combination the tests can tell apart."""
    check_combination(data, FAST if data in FAST_COMBINATIONS else NO_TESTS, lint=True)
