"""`copier update` across the layout redesign: a service rendered before it moves to the new layout whole,
with no template file left at its old path and the team's own graph and modules untouched.

The old side is the template as of the last commit before the redesign, read from this repository's
history; the new side is the working tree, as the other update tests take it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .checks import run
from .paths import ROOT, TEMPLATE_PARTS
from .rendering import copy_template, git, git_save, render
from .updating import PACKAGE, answers, assert_clean_merge, commit_project, update

# The last commit of the template's old layout (before issue 24's redesign).
BEFORE_REDESIGN = "6283ed776c2bddec90f2b48f9d3d9b0eff08af3b"

GRAPH = f"src/{PACKAGE}/graph.py"
OUR_MODULE = f"src/{PACKAGE}/tools.py"
OUR_GRAPH_LINE = "\n\n# Ours: the team's change to its graph; the redesign must keep it.\nMAX_TURNS = 20\n"
OUR_MODULE_TEXT = (
    '"""Our own helper, unknown to the template."""\n\n\n'
    "def word_count(text: str) -> int:\n"
    "    return len(text.split())\n"
)
# Files the team owns in the service: its own, and those the template renders once and never updates
# (`_skip_if_exists` in copier.yml). The update must leave each exactly as the team committed it.
TEAM_FILES = frozenset({OUR_MODULE, GRAPH, f"src/{PACKAGE}/prompts.py", "tests/test_graph.py"})

# Importing every module of the package finds one that still imports a moved module (seconds, where
# mypy over the project takes longer).
IMPORT_PACKAGE = f"""
import importlib, pkgutil
import {PACKAGE}
for module in pkgutil.walk_packages({PACKAGE}.__path__, "{PACKAGE}."):
    importlib.import_module(module.name)
"""


def template_at(commit: str, dest: Path, tag: str) -> Path:
    """A git repository holding the template parts as they were at `commit` of this repository, tagged."""
    known = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True)
    if known.returncode != 0:
        pytest.skip(f"commit {commit[:12]} (the template before the redesign) is not in this clone's history")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit, *TEMPLATE_PARTS], capture_output=True, check=True
    ).stdout
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    git(dest, "init", "-q", "-b", "main")
    git_save(dest, f"template as of {commit[:12]}", tag=tag)
    return dest


def files_of(project: Path) -> set[str]:
    """The project's files as git sees them: tracked or not, without what its .gitignore leaves out."""
    if not (project / ".git").exists():
        git(project, "init", "-q", "-b", "main")
    listed = git(project, "ls-files", "--cached", "--others", "--exclude-standard", "-z").split("\0")
    return {name for name in listed if name and (project / name).is_file()}


def left_behind(old: set[str], new: set[str], ours: frozenset[str], project: Path) -> list[str]:
    """Files the old render had and a fresh render of the new template does not, still in the project."""
    return sorted(name for name in old - new - ours if (project / name).exists())


def changes(project: Path) -> dict[str, set[str]]:
    """What the update changed since the team's last commit, by git's status letter (A, D, M)."""
    git(project, "add", "-A")
    changed: dict[str, set[str]] = {}
    for line in git(project, "diff", "--cached", "--name-status", "--no-renames", "HEAD").splitlines():
        status, name = line.split("\t", 1)
        changed.setdefault(status[0], set()).add(name)
    return changed


def render_team_service(template: Path, project: Path) -> set[str]:
    """The default service at v1.0.0, committed, then the team's edit and module committed on top; the
    files of the render itself."""
    render(template, project, vcs_ref="v1.0.0")
    commit_project(project)
    rendered = files_of(project)
    graph = project / GRAPH
    graph.write_text(graph.read_text() + OUR_GRAPH_LINE)
    (project / OUR_MODULE).write_text(OUR_MODULE_TEXT)
    git_save(project, "our graph and our tools")
    return rendered


def test_left_behind_names_an_old_template_file_the_update_kept(tmp_path: Path) -> None:
    for name in ("platform/moved.py", "platform/kept.py", "core/moved.py", "ours.py"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    old = {"platform/moved.py", "platform/kept.py", "platform/gone.py", "ours.py"}
    new = {"core/moved.py", "platform/kept.py"}
    assert left_behind(old, new, frozenset({"ours.py"}), tmp_path) == ["platform/moved.py"]


def test_update_across_the_redesign_moves_the_service_to_the_new_layout(tmp_path: Path, project_python: Path) -> None:
    template = template_at(BEFORE_REDESIGN, tmp_path / "template", tag="v1.0.0")
    project = tmp_path / "service"
    old = render_team_service(template, project)
    graph_before = (project / GRAPH).read_text()
    copy_template(template)
    git_save(template, "the redesigned layout", tag="v2.0.0")
    new = files_of(render(template, tmp_path / "fresh", vcs_ref="v2.0.0"))

    update(project, "v2.0.0")

    assert_clean_merge(project)
    assert answers(project)["_commit"] == "v2.0.0"
    assert left_behind(old, new, TEAM_FILES, project) == [], "old template files left at their old paths"
    now = files_of(project)
    assert sorted(new - now) == [], "files of the new layout the update did not bring"
    assert sorted(now - new - TEAM_FILES) == [], "files neither the new template nor the team owns"
    changed = changes(project)
    assert changed.get("D", set()) == old - new - TEAM_FILES
    assert changed.get("A", set()) == new - old
    assert changed.get("M", set()) <= (old & new) - TEAM_FILES, "the update rewrote a file the team owns"
    assert set(changed) <= {"A", "D", "M"}, changed
    assert (project / GRAPH).read_text() == graph_before and graph_before.endswith(OUR_GRAPH_LINE)
    assert (project / OUR_MODULE).read_text() == OUR_MODULE_TEXT

    env = {**os.environ, "PYTHONPATH": f"{project / 'src'}:{project}", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("VIRTUAL_ENV", None)
    run("import every module of the package", [str(project_python), "-c", IMPORT_PACKAGE], project, env)
    # The update never rewrites the team's test of its graph (`_skip_if_exists`): what it imports must
    # still be there, at the old path if need be.
    run("import the team's tests/test_graph.py", [str(project_python), "-c", "import tests.test_graph"], project, env)
