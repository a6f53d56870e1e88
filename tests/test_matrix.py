"""Render every combination of the behaviour-changing options, lint it, and run its own tests: the fast
tier on each combination the tests can tell apart, the heavy tier on a pairwise cover (both everywhere
under `make test-full`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pytest

from .helpers import (
    DEPLOY_ONLY,
    FAST,
    HEAVY,
    INERT_IN_TESTS,
    MATRIX_OPTIONS,
    NO_TESTS,
    ROOT,
    ROTATED_HEAVY_MODULES,
    Timing,
    all_combinations,
    all_pairs,
    combination_id,
    default_combination,
    fast_tier_combinations,
    heavy_combinations,
    pairwise_cover,
    render,
    richest_combination,
    rotated_out,
    run_project_checks,
    shared_env,
    timed,
)

# `make test-full` sets this: every tier on every combination.
FULL = os.environ.get("TEMPLATE_TEST_FULL") == "1"
COMBINATIONS = all_combinations()
HEAVY_COMBINATIONS = COMBINATIONS if FULL else heavy_combinations()
FAST_COMBINATIONS = COMBINATIONS if FULL else fast_tier_combinations()
# One rendering per provider, with every optional dependency switched on, covers the union of deps.
DEPENDENCY_PROBES = [
    {"llm_provider": provider, "object_store": "s3", "auth": auth, "kubernetes": True}
    for provider, auth in (("fake", "jwt"), ("openai", "api_key"), ("anthropic", "none"))
]


@pytest.fixture(scope="session")
def matrix_python(template_repo: Path, tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    probes = [render(template_repo, tmp_path_factory.mktemp("deps"), data) for data in DEPENDENCY_PROBES]
    return shared_env(probes, cache_dir)


class CheckCombination(Protocol):
    def __call__(self, data: dict[str, Any], tier: str, lint: bool, skip_modules: tuple[str, ...] = ()) -> None: ...


@pytest.fixture
def check_combination(
    template_repo: Path,
    matrix_python: Path,
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
        run_project_checks(project, matrix_python, cache_dir, timings, tier=tier, lint=lint, skip_modules=skip_modules)

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


def test_fast_tier_runs_once_per_code_combination_pairs_every_answer_and_has_default_and_richest() -> None:
    fast = fast_tier_combinations()
    ignored = (*INERT_IN_TESTS, *DEPLOY_ONLY)
    code = {tuple((k, v) for k, v in c.items() if k not in ignored) for c in COMBINATIONS}
    assert {tuple((k, v) for k, v in c.items() if k not in ignored) for c in fast} == code
    assert all_pairs(COMBINATIONS) <= all_pairs(fast)
    assert len(fast) < len(COMBINATIONS)
    assert default_combination() in fast and richest_combination() in fast


def test_heavy_set_covers_every_pair_of_live_answers_and_every_answer() -> None:
    heavy = heavy_combinations()
    live = [{k: v for k, v in c.items() if k not in INERT_IN_TESTS} for c in COMBINATIONS]
    wanted = all_pairs(live)
    covered = all_pairs(heavy)
    assert wanted <= covered
    assert all({c[name] for c in heavy} == set(values) for name, values in MATRIX_OPTIONS.items())
    assert default_combination() in heavy and richest_combination() in heavy
    assert len(heavy) < len(COMBINATIONS)


def test_cover_grows_with_a_new_option_or_choice() -> None:
    grown = {**MATRIX_OPTIONS, "auth": (*MATRIX_OPTIONS["auth"], "oidc"), "tracing": (False, True)}
    cover = pairwise_cover(grown)
    assert all_pairs(cover) == all_pairs(all_combinations(grown))
    assert any(c["auth"] == "oidc" and c["tracing"] for c in cover)
    # No smaller than the two largest options' product: each of their pairs needs its own combination.
    sizes = sorted(len(values) for values in grown.values())
    assert sizes[-1] * sizes[-2] <= len(cover) < len(all_combinations(grown))


def test_each_rotated_heavy_module_runs_on_the_default_and_one_more_with_its_answers() -> None:
    heavy = heavy_combinations()
    assert heavy[0] == default_combination()
    template_tests = {path.name.split(".")[0] for path in (ROOT / "template" / "tests").iterdir()}
    for module, wanted in ROTATED_HEAVY_MODULES.items():
        assert module in template_tests, f"{module} is not a rendered test module"
        where = [index for index in range(len(heavy)) if module not in rotated_out(index, heavy)]
        assert len(where) == 2 and where[0] == 0, (module, where)
        assert all(heavy[where[1]][k] == v for k, v in wanted.items()), (module, heavy[where[1]])
    assert any(c["auth"] == "api_key" for c in heavy) and default_combination()["auth"] == "none"
    # Spread: no combination besides the default takes more than one of them while another takes none.
    taken = [len(ROTATED_HEAVY_MODULES) - len(rotated_out(index, heavy)) for index in range(1, len(heavy))]
    assert max(taken) - min(taken) <= 1
