"""Render every combination of the behaviour-changing options, lint it, and run its own tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .helpers import all_combinations, combination_id, render, run_project_checks, shared_env

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


@pytest.mark.parametrize("data", COMBINATIONS, ids=[combination_id(c) for c in COMBINATIONS])
def test_combination(
    data: dict[str, Any], template_repo: Path, matrix_python: Path, tmp_path: Path, cache_dir: Path
) -> None:
    project = render(template_repo, tmp_path / "service", data)
    run_project_checks(project, matrix_python, cache_dir)
