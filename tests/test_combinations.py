"""The answer combinations the matrix renders, checked without rendering any: the pairwise cover meets
every pair, the tiers run where their docstrings say, and the rotated heavy modules take turns. Pure
Python over copier.yml, so a change to the cover fails here in milliseconds rather than in the matrix."""

from __future__ import annotations

from .combinations import (
    DEPLOY_ONLY,
    INERT_IN_TESTS,
    MATRIX_OPTIONS,
    ROTATED_HEAVY_MODULES,
    all_combinations,
    all_pairs,
    default_combination,
    fast_tier_combinations,
    heavy_combinations,
    pairwise_cover,
    richest_combination,
    rotated_out,
)
from .paths import ROOT

COMBINATIONS = all_combinations()


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
