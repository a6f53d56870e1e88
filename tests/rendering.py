"""A template as the user gets it (a tagged git repository of the working tree) and services rendered
from it, with the git plumbing both need: the tests do with git and copier what a service team does."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import copier

from .paths import ROOT, TEMPLATE_PARTS


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


def copy_template(dest: Path) -> None:
    """Put the working tree's template parts into `dest` in place of whatever parts it held: the next
    release of a template repository that a test built from an older one."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in TEMPLATE_PARTS:
        shutil.rmtree(dest / part, ignore_errors=True)
        (dest / part).unlink(missing_ok=True)
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__", ".venv", ".data"))
        elif src.exists():
            shutil.copy2(src, dest / part)


def make_template_repo(dest: Path, tag: str = "v1.0.0") -> Path:
    """A git repository holding the working tree's template, committed and tagged."""
    copy_template(dest)
    git(dest, "init", "-q", "-b", "main")
    git_save(dest, "template", tag=tag)
    return dest


def render(template: Path, dest: Path, data: dict[str, Any] | None = None, vcs_ref: str = "v1.0.0") -> Path:
    copier.run_copy(str(template), dest, data=data or {}, defaults=True, vcs_ref=vcs_ref, unsafe=True, quiet=True)
    return dest
