"""Helpers for the template's tests: a git-tagged copy of the template, rendering, and the shared env."""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import copier
import pytest

ROOT = Path(__file__).resolve().parent.parent
# What a rendered service is made of; the repo's own tests, CI and caches are not.
TEMPLATE_PARTS = ("copier.yml", "template", "hooks")

# Every option that changes what is rendered or how it behaves.
MATRIX_OPTIONS: dict[str, tuple[Any, ...]] = {
    "llm_provider": ("fake", "openai", "anthropic"),
    "object_store": ("none", "s3"),
    "checkpoint_queue": (False, True),
    "auth": ("none", "api_key", "jwt"),
    "kubernetes": (False, True),
}


def all_combinations() -> list[dict[str, Any]]:
    keys = list(MATRIX_OPTIONS)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*MATRIX_OPTIONS.values())]


def combination_id(data: dict[str, Any]) -> str:
    return "-".join(f"{v}" if not isinstance(v, bool) else (k if v else f"no_{k}") for k, v in data.items())


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
    return [*pyproject["project"]["dependencies"], *pyproject["dependency-groups"]["dev"]]


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
            subprocess.run(["uv", "pip", "install", "-q", "--python", str(python), "-r", str(req_file)], check=True)
            done.touch()
    return python


def run(step: str, args: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> None:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(
            f"{step} failed in {cwd} (exit {result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
        )


def run_project_checks(project: Path, python: Path, cache_dir: Path) -> None:
    """The updated service's own lint, types and tests, as the matrix runs them."""
    bin_dir = python.parent
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
    run("pytest", [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"], project, env)
