"""Running a rendered service's own checks: one shared virtualenv with every render's dependencies, then
its lint, types and a tier of its tests in a subprocess, each step timed for the summary table."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

# One rendering per provider, with every optional dependency switched on, covers the union of deps.
DEPENDENCY_PROBES: list[dict[str, Any]] = [
    {"llm_provider": provider, "object_store": "s3", "auth": auth, "kubernetes": True}
    for provider, auth in (("fake", "jwt"), ("openai", "api_key"), ("anthropic", "none"))
]


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
    try:
        result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        # A hang: what it printed last says where (a render's pytest dumps its stacks after 5 minutes).
        out, err = (_text(exc.stdout), _text(exc.stderr))
        pytest.fail(f"{step} timed out after {timeout} s in {cwd}:\n{out[-6000:]}\n{err[-12000:]}")
    if result.returncode != 0:
        pytest.fail(
            f"{step} failed in {cwd} (exit {result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
        )


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


# A phase of a run, as the summary table reports it: (phase, start as epoch seconds, seconds taken).
Timing = tuple[str, float, float]


@contextmanager
def timed(timings: list[Timing], phase: str) -> Iterator[None]:
    start = time.time()
    try:
        yield
    finally:
        timings.append((phase, start, time.time() - start))


# Where a rendered service keeps its Python: the package, its tests, the benchmarks, deploy helpers.
PYTHON_DIRS = ("src", "tests", "bench", "deploy")
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
            run("ruff check", [str(bin_dir / "ruff"), "check", *PYTHON_DIRS], project, env)
            run("ruff format", [str(bin_dir / "ruff"), "format", "--check", *PYTHON_DIRS], project, env)
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
