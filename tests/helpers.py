"""Helpers for the template's tests: a git-tagged copy of the template, rendering, and the shared env."""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import copier
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
# What a rendered service is made of; the repo's own tests, CI and caches are not.
TEMPLATE_PARTS = ("copier.yml", "template", "hooks")

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
# `make test-full`. The browser test's second is an api_key render: a front end that sends a key. Listed
# costliest first, so that the spread evens out.
ROTATED_HEAVY_MODULES: dict[str, dict[str, Any]] = {
    "test_crons_replicas": {},
    "test_browser": {"auth": "api_key"},
    "test_retention": {},
    "test_limits": {},
    "test_bench": {},
    "test_tracing": {},
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


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def git_save(repo: Path, message: str, tag: str | None = None) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    if tag:
        git(repo, "tag", tag)


def make_template_repo(dest: Path, tag: str = "v1.0.0") -> Path:
    """A git repository holding the working tree's template, committed and tagged."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in TEMPLATE_PARTS:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__", ".venv", ".data"))
        elif src.exists():
            shutil.copy2(src, dest / part)
    git(dest, "init", "-q", "-b", "main")
    git_save(dest, "template", tag=tag)
    return dest


def render(template: Path, dest: Path, data: dict[str, Any] | None = None, vcs_ref: str = "v1.0.0") -> Path:
    copier.run_copy(str(template), dest, data=data or {}, defaults=True, vcs_ref=vcs_ref, unsafe=True, quiet=True)
    return dest


def project_requirements(project: Path) -> list[str]:
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    groups = pyproject["dependency-groups"]
    return [*pyproject["project"]["dependencies"], *groups["dev"], *groups.get("embedded", [])]


def shared_env(projects: list[Path], cache: Path) -> Path:
    """One virtualenv with the union of every rendered project's dependencies, reused across runs."""
    requirements = sorted({r for p in projects for r in project_requirements(p)})
    digest = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:12]
    env = cache / f"env-{digest}"
    python = env / "bin" / "python"
    done = env / ".complete"
    # xdist workers ask for it at the same time: one builds it, the others wait for the marker.
    with open(cache / f"env-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(env, ignore_errors=True)
            subprocess.run(["uv", "venv", "-q", "--python", sys.executable, str(env)], check=True)
            req_file = cache / f"requirements-{digest}.txt"
            req_file.write_text("\n".join(requirements) + "\n")
            # Compiled now, once: every test process would otherwise recompile what it imports.
            install = ["uv", "pip", "install", "-q", "--compile-bytecode", "--python", str(python), "-r", str(req_file)]
            subprocess.run(install, check=True)
            done.touch()
    return python


def run(step: str, args: list[str], cwd: Path, env: dict[str, str], timeout: int = 1800) -> None:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(
            f"{step} failed in {cwd} (exit {result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
        )


# A phase of a run, as the summary table reports it: (phase, start as epoch seconds, seconds taken).
Timing = tuple[str, float, float]


@contextmanager
def timed(timings: list[Timing], phase: str) -> Iterator[None]:
    start = time.time()
    try:
        yield
    finally:
        timings.append((phase, start, time.time() - start))


FAST, HEAVY = "not heavy", "heavy"
# Lint and types only: the combination's tests are the same as another combination's (INERT_IN_TESTS).
NO_TESTS = ""


def check_jsonschema() -> str:
    """The template environment's check-jsonschema, which validates GitHub workflow files offline."""
    return str(Path(sys.executable).parent / "check-jsonschema")


def run_project_checks(
    project: Path,
    python: Path,
    cache_dir: Path,
    timings: list[Timing] | None = None,
    tier: str = FAST,
    lint: bool = True,
    skip_modules: tuple[str, ...] = (),
) -> None:
    """The rendered service's own lint and types, then one tier of its tests (`tier` is a pytest -m
    expression over its `heavy` marker) without `skip_modules`; each step's time goes into `timings`."""
    bin_dir = python.parent
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(project / "src"),
        "MYPY_CACHE_DIR": str(cache_dir / f"mypy-{worker}"),
        "PYTHONDONTWRITEBYTECODE": "1",
        # Hypothesis builds its Unicode tables once (seconds) and keeps them here, not in each fresh render.
        "HYPOTHESIS_STORAGE_DIRECTORY": str(cache_dir / "hypothesis"),
        # The fuzzers run on every heavy combination, each with its own seed: fewer examples per run here
        # (the rendered service's own CI keeps its default of 25).
        "FUZZ_EXAMPLES": os.environ.get("FUZZ_EXAMPLES", "10"),
    }
    env.pop("VIRTUAL_ENV", None)
    timings = [] if timings is None else timings
    if lint:
        with timed(timings, "ruff"):
            run("ruff check", [str(bin_dir / "ruff"), "check", "src", "tests", "deploy"], project, env)
            run("ruff format", [str(bin_dir / "ruff"), "format", "--check", "src", "tests", "deploy"], project, env)
            workflows = sorted(str(path) for path in (project / ".github" / "workflows").glob("*.yml"))
            schema = ["--builtin-schema", "vendor.github-workflows"]
            run("workflow schema", [check_jsonschema(), *schema, *workflows], project, env)
            # The uv.lock that copier's task wrote matches pyproject.toml (the Docker build uses --frozen).
            run("uv lock --check", ["uv", "lock", "--check", "--quiet"], project, env)
        with timed(timings, "mypy"):
            run("mypy", [str(bin_dir / "mypy")], project, env)
    if tier == NO_TESTS:
        return
    phase = {FAST: "fast tier", HEAVY: "heavy tier"}.get(tier, "all tiers")
    with timed(timings, phase):
        skipped = [f"--ignore=tests/{module}.py" for module in skip_modules]
        pytest_args = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "-m", tier, *skipped]
        run("pytest", pytest_args, project, env)
