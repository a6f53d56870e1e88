"""What every `copier update` test does around the update itself: commit the rendered service as its team
would, run the update as the team's CI would, read the recorded answers, and check that the merge left no
conflict behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import copier
import yaml

from .rendering import git, git_save

PACKAGE = "agent_service"  # what the default project_name derives


def commit_project(project: Path) -> None:
    git(project, "init", "-q", "-b", "main")
    git_save(project, "rendered by copier copy")


def update(project: Path, vcs_ref: str) -> None:
    copier.run_update(dst_path=project, defaults=True, overwrite=True, unsafe=True, vcs_ref=vcs_ref, quiet=True)


def answers(project: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((project / ".copier-answers.yml").read_text())
    return loaded


def assert_clean_merge(project: Path) -> None:
    rejects = [p.relative_to(project) for p in project.rglob("*.rej")]
    conflicted = [
        p.relative_to(project)
        for p in project.rglob("*")
        if p.is_file() and ".git" not in p.parts and "<<<<<<< " in p.read_text(errors="ignore")
    ]
    assert rejects == [], f"copier left rejected hunks: {rejects}"
    assert conflicted == [], f"copier left conflict markers in: {conflicted}"
