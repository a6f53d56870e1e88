"""The answer combinations the matrix renders, checked without rendering any: the pairwise cover meets
every pair, the tiers run where their docstrings say, and the rotated heavy modules take turns. Pure
Python over copier.yml, so a change to the cover fails here in milliseconds rather than in the matrix."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from . import combinations
from .combinations import (
    DEPLOY_ONLY,
    INERT_IN_TESTS,
    MATRIX_OPTIONS,
    NOT_IN_MATRIX,
    ROTATED_HEAVY_MODULES,
    all_combinations,
    all_pairs,
    combination_id,
    default_combination,
    fast_tier_combinations,
    heavy_combinations,
    matrix_options,
    pairs_of,
    pairwise_cover,
    richest_combination,
    rotated_out,
    rotated_runs,
)
from .paths import ROOT

COMBINATIONS = all_combinations()


# ---------------------------------------------------------------- copier.yml's closed questions

SYNTHETIC_COPIER_YML = """\
_subdirectory: template
name:
  type: str
  default: x
python_version:
  type: str
  choices: ["3.11", "3.12"]
  default: "3.11"
colour:
  type: str
  choices:
    Red: red
    Green: green
    Blue: blue
  default: blue
size:
  type: str
  choices: [s, m, l]
  default: l
dark:
  type: bool
  default: true
beta:
  type: bool
  default: false
workers:
  type: int
  default: 3
"""


def test_matrix_options_take_every_closed_question_default_first(tmp_path: Path) -> None:
    copier_yml = tmp_path / "copier.yml"
    copier_yml.write_text(SYNTHETIC_COPIER_YML)
    # Settings (_*), free text and numbers stay out, as does NOT_IN_MATRIX; the others keep their order.
    assert matrix_options(copier_yml) == {
        "colour": ("blue", "red", "green"),
        "size": ("l", "s", "m"),
        "dark": (True, False),
        "beta": (False, True),
    }


def test_matrix_options_of_copier_yml_start_with_each_questions_default() -> None:
    questions = yaml.safe_load((ROOT / "copier.yml").read_text())
    closed = {
        name
        for name, question in questions.items()
        if isinstance(question, dict) and ("choices" in question or question.get("type") == "bool")
    }
    assert set(MATRIX_OPTIONS) == closed - NOT_IN_MATRIX
    assert default_combination() == {name: questions[name]["default"] for name in MATRIX_OPTIONS}
    assert all(len(set(values)) == len(values) >= 2 for values in MATRIX_OPTIONS.values())


def test_all_combinations_is_the_product_in_option_order() -> None:
    options = {"a": (1, 2, 3), "b": (True, False)}
    assert all_combinations(options) == [
        {"a": 1, "b": True},
        {"a": 1, "b": False},
        {"a": 2, "b": True},
        {"a": 2, "b": False},
        {"a": 3, "b": True},
        {"a": 3, "b": False},
    ]
    assert len(COMBINATIONS) == math.prod(len(values) for values in MATRIX_OPTIONS.values())
    assert COMBINATIONS[0] == default_combination()


def test_richest_combination_turns_every_feature_on() -> None:
    questions = yaml.safe_load((ROOT / "copier.yml").read_text())
    richest = richest_combination()
    assert list(richest) == list(MATRIX_OPTIONS)
    for name, value in richest.items():
        choices = questions[name].get("choices")
        if choices is None:
            assert value is True, name
        else:
            listed = list(choices.values()) if isinstance(choices, dict) else list(choices)
            assert value == listed[-1], name
    # The docstring's example, and the answers the update tests call richest.
    assert richest["auth"] == "jwt" and richest["object_store"] == "s3"
    assert richest["checkpoint_queue"] is True and richest["kubernetes"] is True
    assert richest in COMBINATIONS and richest != default_combination()


def test_richest_combination_takes_the_last_listed_choice_not_the_last_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "copier.yml").write_text(SYNTHETIC_COPIER_YML)
    monkeypatch.setattr(combinations, "ROOT", tmp_path)
    options = matrix_options(tmp_path / "copier.yml")
    # Both defaults are listed last: they come first among the options and are still the richest.
    assert richest_combination(options) == {"colour": "blue", "size": "l", "dark": True, "beta": True}
    assert default_combination(options) == {"colour": "blue", "size": "l", "dark": True, "beta": False}


def test_combination_id_names_yes_no_answers_and_is_unique() -> None:
    assert combination_id({"auth": "jwt", "kubernetes": True, "checkpoint_queue": False}) == (
        "jwt-kubernetes-no_checkpoint_queue"
    )
    ids = [combination_id(combination) for combination in COMBINATIONS]
    assert len(set(ids)) == len(ids)


def test_pairs_of_pairs_answers_by_question_name_whatever_the_order() -> None:
    assert pairs_of({"b": 2, "a": 1, "c": 3}) == {
        (("a", 1), ("b", 2)),
        (("a", 1), ("c", 3)),
        (("b", 2), ("c", 3)),
    }
    assert pairs_of({"b": 2, "a": 1}) == pairs_of({"a": 1, "b": 2})
    assert all_pairs([{"a": 1, "b": 2}, {"a": 1, "b": 3}]) == {(("a", 1), ("b", 2)), (("a", 1), ("b", 3))}


# ---------------------------------------------------------------- the pairwise cover

SYNTHETIC_OPTIONS: dict[str, dict[str, tuple[Any, ...]]] = {
    "three yes/no": {"a": (False, True), "b": (False, True), "c": (False, True)},
    "four yes/no": {"a": (False, True), "b": (False, True), "c": (False, True), "d": (False, True)},
    "four of three": {name: ("x", "y", "z") for name in "abcd"},
    "mixed sizes": {"a": (1, 2, 3, 4), "b": ("x", "y", "z"), "c": (True, False), "d": ("p", "q")},
    "two options": {"a": (1, 2, 3), "b": (1, 2)},
    "real": MATRIX_OPTIONS,
}


@pytest.mark.parametrize("options", SYNTHETIC_OPTIONS.values(), ids=SYNTHETIC_OPTIONS.keys())
def test_pairwise_cover_meets_every_pair_with_real_combinations(options: dict[str, tuple[Any, ...]]) -> None:
    everything = all_combinations(options)
    cover = pairwise_cover(options)
    assert all_pairs(cover) == all_pairs(everything)
    assert all(combination in everything for combination in cover)
    assert all(list(combination) == list(options) for combination in cover)
    assert len({tuple(combination.items()) for combination in cover}) == len(cover), "a combination twice"
    # Each pair of the two largest options' values needs a combination of its own.
    sizes = sorted(len(values) for values in options.values())
    assert sizes[-1] * sizes[-2] <= len(cover) <= len(everything)
    assert pairwise_cover(options) == cover, "the cover must not change from one collection to the next"


LOWER_BOUND_CASES = ("three yes/no", "four of three", "mixed sizes", "two options")


@pytest.mark.parametrize("name", LOWER_BOUND_CASES)
def test_pairwise_cover_reaches_the_lower_bound_where_the_greedy_choice_can(name: str) -> None:
    """Each combination the cover adds costs a heavy-tier render: where the greedy choice finds a cover of
    the lower bound's size (the two largest options' product), a change to it must not lose that."""
    options = SYNTHETIC_OPTIONS[name]
    sizes = sorted(len(values) for values in options.values())
    assert len(pairwise_cover(options)) == sizes[-1] * sizes[-2]


def test_pairwise_cover_starts_with_its_seeds_and_only_adds_what_they_miss() -> None:
    options = SYNTHETIC_OPTIONS["mixed sizes"]
    seeds = (default_combination(options), richest_combination(options))
    cover = pairwise_cover(options, seeds=seeds)
    assert cover[:2] == list(seeds)
    assert all_pairs(cover) == all_pairs(all_combinations(options))
    assert all(pairs_of(added) - all_pairs(cover[:n]) for n, added in enumerate(cover) if n >= 2), "a useless pick"
    everything = tuple(all_combinations(options))
    assert pairwise_cover(options, seeds=everything) == list(everything)


def test_an_option_set_without_pairs_needs_no_cover() -> None:
    assert pairwise_cover({"a": (1, 2, 3)}) == []


def test_cover_grows_with_a_new_option_or_choice() -> None:
    grown = {**MATRIX_OPTIONS, "auth": (*MATRIX_OPTIONS["auth"], "oidc"), "tracing": (False, True)}
    cover = pairwise_cover(grown)
    assert all_pairs(cover) == all_pairs(all_combinations(grown))
    assert any(c["auth"] == "oidc" and c["tracing"] for c in cover)
    # No smaller than the two largest options' product: each of their pairs needs its own combination.
    sizes = sorted(len(values) for values in grown.values())
    assert sizes[-1] * sizes[-2] <= len(cover) < len(all_combinations(grown))


# ---------------------------------------------------------------- the tiers and the rotated heavy modules


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


def test_heavy_tier_starts_with_the_default_then_the_richest() -> None:
    heavy = heavy_combinations()
    assert heavy[:2] == [default_combination(), richest_combination()]
    assert all(list(combination) == list(MATRIX_OPTIONS) for combination in heavy)
    # Each inert answer's values take turns over the cover beyond the two seeds.
    for name in INERT_IN_TESTS:
        turns = [combination[name] for combination in heavy[2:]]
        assert turns == [MATRIX_OPTIONS[name][n % len(MATRIX_OPTIONS[name])] for n in range(len(turns))]


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


ROTATING = {"costly": {}, "needs_key": {"auth": "api_key"}, "middle": {}, "cheap": {}}


def test_rotated_runs_give_each_module_the_default_and_the_least_loaded_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(combinations, "ROTATED_HEAVY_MODULES", ROTATING)
    heavy = [{"auth": "none"}, {"auth": "api_key"}, {"auth": "none"}, {"auth": "jwt"}]
    # Costliest first: costly takes 1 (ties go to the lower index), needs_key has only 1 to go to,
    # then middle and cheap take the emptiest of the rest.
    assert rotated_runs(heavy) == {"costly": (0, 1), "needs_key": (0, 1), "middle": (0, 2), "cheap": (0, 3)}
    assert rotated_out(0, heavy) == ()
    assert rotated_out(1, heavy) == ("middle", "cheap")
    assert rotated_out(2, heavy) == ("costly", "needs_key", "cheap")
    assert rotated_out(3, heavy) == ("costly", "needs_key", "middle")


def test_a_rotated_module_without_a_match_runs_on_the_default_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # The default itself never counts as the second run, even when it has the answers asked for.
    rotating = {"needs_oidc": {"auth": "oidc"}, "on_none": {"auth": "none"}}
    monkeypatch.setattr(combinations, "ROTATED_HEAVY_MODULES", rotating)
    heavy = [{"auth": "none"}, {"auth": "jwt"}]
    assert rotated_runs(heavy) == {"needs_oidc": (0,), "on_none": (0,)}
    assert rotated_out(1, heavy) == ("needs_oidc", "on_none")
    assert rotated_runs([{"auth": "none"}]) == {"needs_oidc": (0,), "on_none": (0,)}
