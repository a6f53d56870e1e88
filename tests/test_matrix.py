"""Render every combination of the behaviour-changing options, lint it, and run its own tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .helpers import all_combinations, combination_id, render, shared_env

COMBINATIONS = all_combinations()
# One rendering per provider, with every optional dependency switched on, covers the union of deps.
DEPENDENCY_PROBES = [
    {"llm_provider": provider, "object_store": "s3", "auth": auth, "kubernetes": True}
    for provider, auth in (("fake", "jwt"), ("openai", "api_key"), ("anthropic", "none"))
]


@pytest.fixture(scope="session")
def matrix_python(template_repo: Path, tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    probes = [render(template_repo, tmp_path_factory.mktemp("deps"), data) for data in DEPENDENCY_PROBES]
    return shared_env(probes, cache_dir)


def run(step: str, args: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> None:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(
            f"{step} failed in {cwd} (exit {result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
        )


@pytest.mark.parametrize("data", COMBINATIONS, ids=[combination_id(c) for c in COMBINATIONS])
def test_combination(
    data: dict[str, Any], template_repo: Path, matrix_python: Path, tmp_path: Path, cache_dir: Path
) -> None:
    project = render(template_repo, tmp_path / "service", data)
    bin_dir = matrix_python.parent
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(project / "src"),
        "MYPY_CACHE_DIR": str(cache_dir / f"mypy-{worker}"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("VIRTUAL_ENV", None)
    run("ruff check", [str(bin_dir / "ruff"), "check", "src", "tests"], project, env)
    run("ruff format", [str(bin_dir / "ruff"), "format", "--check", "src", "tests"], project, env)
    run("mypy", [str(bin_dir / "mypy")], project, env)
    run("pytest", [str(matrix_python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"], project, env)
