"""Which answer combinations the matrix renders: every closed question of copier.yml, the greedy pairwise
cover, the fast and heavy tiers' sets and the heavy modules that rotate among them. Pure Python over
copier.yml, so that what the matrix runs can be unit-tested in milliseconds, apart from any rendering."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from .paths import ROOT

# Questions with choices that the matrix does not vary, and why.
NOT_IN_MATRIX = {
    # The tests run on one interpreter; the answer only sets requires-python and mypy's target version.
    "python_version",
}


def matrix_options(copier_yml: Path = ROOT / "copier.yml") -> dict[str, tuple[Any, ...]]:
    """Every question of copier.yml with a closed set of answers (choices or yes/no), default first:
    a new option or choice joins the matrix and the pairwise cover by itself."""
    questions = yaml.safe_load(copier_yml.read_text())
    options: dict[str, tuple[Any, ...]] = {}
    for name, question in questions.items():
        if name.startswith("_") or name in NOT_IN_MATRIX or not isinstance(question, dict):
            continue
        choices = question.get("choices")
        if isinstance(choices, dict):
            values: list[Any] = list(choices.values())
        elif isinstance(choices, list):
            values = list(choices)
        elif question.get("type") == "bool":
            values = [False, True]
        else:
            continue
        default = question.get("default")
        options[name] = tuple(sorted(values, key=lambda value: value != default))
    return options


MATRIX_OPTIONS = matrix_options()


def all_combinations(options: dict[str, tuple[Any, ...]] = MATRIX_OPTIONS) -> list[dict[str, Any]]:
    keys = list(options)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*options.values())]


def default_combination(options: dict[str, tuple[Any, ...]] = MATRIX_OPTIONS) -> dict[str, Any]:
    return {name: values[0] for name, values in options.items()}


def richest_combination(options: dict[str, tuple[Any, ...]] = MATRIX_OPTIONS) -> dict[str, Any]:
    """Every feature on: yes for yes/no questions, the last listed choice otherwise (copier.yml lists
    choices from the plainest to the fullest, as in none -> api_key -> jwt)."""
    questions = yaml.safe_load((ROOT / "copier.yml").read_text())
    richest: dict[str, Any] = {}
    for name, values in options.items():
        choices = questions.get(name, {}).get("choices") if isinstance(questions.get(name), dict) else None
        if isinstance(choices, dict):
            richest[name] = list(choices.values())[-1]
        elif isinstance(choices, list):
            richest[name] = choices[-1]
        else:
            richest[name] = True if True in values else values[-1]
    return richest


def combination_id(data: dict[str, Any]) -> str:
    return "-".join(f"{v}" if not isinstance(v, bool) else (k if v else f"no_{k}") for k, v in data.items())


Pair = tuple[tuple[str, Any], tuple[str, Any]]


def pairs_of(combination: dict[str, Any]) -> set[Pair]:
    return set(itertools.combinations(sorted(combination.items(), key=lambda item: item[0]), 2))


def all_pairs(combinations: Iterable[dict[str, Any]]) -> set[Pair]:
    """Every pair of answers that some combination of `combinations` has."""
    return {pair for combination in combinations for pair in pairs_of(combination)}


def pairwise_cover(
    options: dict[str, tuple[Any, ...]] = MATRIX_OPTIONS, seeds: tuple[dict[str, Any], ...] = ()
) -> list[dict[str, Any]]:
    """The seeds, then greedily the combination that covers the most uncovered pairs of option values,
    until every pair appears together in at least one combination. Ties go to the combination covering
    more pairs of the options with the most values (the scarce pairs), then to product order."""
    wanted = all_pairs(all_combinations(options))
    chosen = [dict(seed) for seed in seeds]
    for seed in chosen:
        wanted -= pairs_of(seed)
    candidates = all_combinations(options)

    def gain(new_pairs: set[Pair]) -> tuple[int, int]:
        return len(new_pairs), sum(len(options[a]) * len(options[b]) for (a, _), (b, _) in new_pairs)

    while wanted:
        best = max(candidates, key=lambda combination: gain(pairs_of(combination) & wanted))
        chosen.append(best)
        wanted -= pairs_of(best)
    return chosen


# Answers the rendered tests cannot tell apart at run time: they always run the fake model, so the provider
# changes only llm.py and the dependencies, which the fast tier lints and type-checks on every combination.
INERT_IN_TESTS = ("llm_provider",)
# Answers that change only deployment files (deploy/, ops/) and the tests that read them (test_ops): the
# service's code is the same either way, so the fast tier pairs them with every other answer instead of
# running them across the full product.
DEPLOY_ONLY = ("kubernetes",)


def fast_tier_combinations(options: dict[str, tuple[Any, ...]] = MATRIX_OPTIONS) -> list[dict[str, Any]]:
    """Where the fast tier runs in `make test`: every combination of the answers that change the service's
    code, once, with the inert and deploy-only answers chosen so that every pair of answers still meets
    (every combination is still rendered, linted and type-checked)."""
    runtime = {name: values for name, values in options.items() if name not in (*INERT_IN_TESTS, *DEPLOY_ONLY)}
    others = {name: values for name, values in options.items() if name not in runtime}
    wanted = all_pairs(all_combinations(options))
    chosen: list[dict[str, Any]] = []
    for combination in all_combinations(runtime):
        best = max(all_combinations(others), key=lambda extra: len(pairs_of({**combination, **extra}) & wanted))
        chosen.append({name: {**combination, **best}[name] for name in options})
        wanted -= pairs_of(chosen[-1])
    for seed in (default_combination(options), richest_combination(options)):
        if seed not in chosen:
            # The same code, the seed's own rendering: the default and the richest always run the tests.
            chosen = [c for c in chosen if any(c[n] != seed[n] for n in runtime)] + [seed]
    return pairwise_cover(options, seeds=tuple(chosen))  # adds a combination only for a pair still missing


def heavy_combinations(options: dict[str, tuple[Any, ...]] = MATRIX_OPTIONS) -> list[dict[str, Any]]:
    """Where the heavy tier runs in `make test`: the default answers, the richest, and a pairwise cover of
    the answers that change what the tests run; each inert answer's values take turns, so each appears."""
    live = {name: values for name, values in options.items() if name not in INERT_IN_TESTS}
    seeds = (default_combination(options), richest_combination(options))
    cover = pairwise_cover(live, seeds=tuple({name: seed[name] for name in live} for seed in seeds))
    combinations = [{**seed, **covered} for seed, covered in zip(seeds, cover, strict=False)]
    for index, covered in enumerate(cover[len(seeds) :]):
        inert = {name: options[name][index % len(options[name])] for name in INERT_IN_TESTS if name in options}
        combinations.append({**covered, **inert})
    return [{name: combination[name] for name in options} for combination in combinations]


# Heavy modules whose cost is processes and waits rather than the answers (they reach the service through
# the same auth and savers as the modules that run everywhere): each runs on the default answers and on
# one more heavy combination, taken in turn among those with the answers it names, and on all of them under
# `make test-full`. The browser tests' second is an api_key render: a front end that sends a key; the
# replicas test's second writes checkpoints without the queue (the default has it), so both savers run
# under two processes; the soak's second keeps payloads in S3 through its faults. Listed costliest first,
# so that the spread evens out.
ROTATED_HEAVY_MODULES: dict[str, dict[str, Any]] = {
    "test_soak": {"object_store": "s3"},
    "test_replicas": {"checkpoint_queue": False},
    "test_crons_replicas": {},
    "test_browser": {"auth": "api_key"},
    "test_agent_chat_ui": {"auth": "api_key"},
    "test_retention": {},
    "test_limits": {},
    "test_bench": {},
    "test_tracing": {},
    "test_reference": {},
}


def rotated_runs(combinations: list[dict[str, Any]]) -> dict[str, tuple[int, ...]]:
    """Where each rotated module runs: the first combination (the default answers) and, of the others with
    its answers, the one that has the fewest rotated modules so far (costliest modules first)."""
    runs: dict[str, tuple[int, ...]] = {}
    load = [0] * len(combinations)
    for module, wanted in ROTATED_HEAVY_MODULES.items():
        matching = [n for n, c in enumerate(combinations) if n > 0 and all(c.get(k) == v for k, v in wanted.items())]
        if not matching:
            runs[module] = (0,)
            continue
        second = min(matching, key=lambda n: (load[n], n))
        load[second] += 1
        runs[module] = (0, second)
    return runs


def rotated_out(index: int, combinations: list[dict[str, Any]]) -> tuple[str, ...]:
    """The rotated modules that the index-th of the heavy `combinations` leaves out."""
    return tuple(module for module, where in rotated_runs(combinations).items() if index not in where)
