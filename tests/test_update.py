"""`copier update` between template versions: the template's changes arrive, the service's own work stays."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.version import InvalidVersion, Version

from .checks import run_project_checks
from .paths import ROOT
from .rendering import copy_template, git, git_save, make_template_repo, render
from .updating import PACKAGE, answers, assert_clean_merge, commit_project, update

DEFAULTS: dict[str, Any] = {}
RICHEST: dict[str, Any] = {"object_store": "s3", "checkpoint_queue": True, "auth": "jwt", "kubernetes": True}
ANSWER_SETS = [pytest.param(DEFAULTS, id="defaults"), pytest.param(RICHEST, id="richest")]

# What the service team does to its copy after `copier copy`.
OUR_GRAPH_LINE = "# Ours: the team's change to its graph; copier update must keep it.\nMAX_TURNS = 20\n"
OUR_PROMPTS = '"""Our prompts."""\n\nSYSTEM_PROMPT = "You are the support team\'s agent. Answer briefly."\n'
OUR_MODULE = (
    '"""Our own helper, unknown to the template."""\n\n\n'
    "def word_count(text: str) -> int:\n"
    "    return len(text.split())\n"
)
OUR_TEST = (
    '"""Our own test, unknown to the template."""\n\n'
    f"from {PACKAGE}.tools import word_count\n\n\n"
    "def test_word_count() -> None:\n"
    '    assert word_count("two words") == 2\n'
)
OUR_README_NOTES = "\n## Team notes\n\nOn call: #support-agent.\n"
OUR_PYPROJECT_TABLE = "\n[tool.coverage.run]\nbranch = true\n"
OUR_ENV = "POOL_MAX_SIZE=20\n"

# What the template's next release changes.
PLATFORM_INIT = Path("template/src/{{package_name}}/platform/__init__.py")
NEW_TEMPLATE_FILE = Path("template/src/{{package_name}}/platform/release.py")
NEW_PLATFORM_LINE = "\n# Template release 2.0.0 changed this package.\n"
NEW_TEMPLATE_MODULE = '"""Which template release rendered this service."""\n\nRELEASE = "2.0.0"\n'
TEMPLATE_GRAPH_LINE = "\n# The template's new example graph line, which must not reach existing services.\n"


def make_user_edits(project: Path) -> None:
    package = project / "src" / PACKAGE
    graph = package / "graph.py"
    graph.write_text(graph.read_text() + "\n\n" + OUR_GRAPH_LINE)
    (package / "prompts.py").write_text(OUR_PROMPTS)
    (package / "tools.py").write_text(OUR_MODULE)
    (project / "tests" / "test_tools.py").write_text(OUR_TEST)
    readme = project / "README.md"
    readme.write_text(readme.read_text() + OUR_README_NOTES)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + OUR_PYPROJECT_TABLE)
    # .env is git-ignored: it holds secrets, so it is never committed, and still must survive.
    (project / ".env").write_text(OUR_ENV)
    git_save(project, "our own changes")


def change_template(template: Path, tag: str) -> None:
    init = template / PLATFORM_INIT
    init.write_text(init.read_text() + NEW_PLATFORM_LINE)
    (template / NEW_TEMPLATE_FILE).write_text(NEW_TEMPLATE_MODULE)
    graph = template / "template" / "src" / "{{package_name}}" / "graph.py"
    graph.write_text(graph.read_text() + TEMPLATE_GRAPH_LINE)
    git_save(template, "template release 2.0.0", tag=tag)


def assert_user_edits_survived(project: Path) -> None:
    package = project / "src" / PACKAGE
    graph = (package / "graph.py").read_text()
    assert OUR_GRAPH_LINE in graph
    assert TEMPLATE_GRAPH_LINE not in graph, "graph.py is the service's: the template's edit must not reach it"
    assert (package / "prompts.py").read_text() == OUR_PROMPTS
    assert (package / "tools.py").read_text() == OUR_MODULE
    assert (project / "tests" / "test_tools.py").read_text() == OUR_TEST
    assert (project / "README.md").read_text().endswith(OUR_README_NOTES)
    assert OUR_PYPROJECT_TABLE in (project / "pyproject.toml").read_text()
    assert (project / ".env").read_text() == OUR_ENV


@pytest.mark.parametrize("data", ANSWER_SETS)
def test_update_keeps_user_work(data: dict[str, Any], tmp_path: Path, project_python: Path, cache_dir: Path) -> None:
    template = make_template_repo(tmp_path / "template", tag="v1.0.0")
    project = render(template, tmp_path / "service", data, vcs_ref="v1.0.0")
    commit_project(project)
    make_user_edits(project)
    change_template(template, tag="v2.0.0")

    update(project, "v2.0.0")

    assert NEW_PLATFORM_LINE in (project / "src" / PACKAGE / "platform" / "__init__.py").read_text()
    assert (project / "src" / PACKAGE / "platform" / "release.py").exists()
    assert_user_edits_survived(project)
    assert_clean_merge(project)
    recorded = answers(project)
    assert recorded["_commit"] == "v2.0.0"
    assert {k: recorded[k] for k in data} == data
    run_project_checks(project, project_python, cache_dir)


def release_tags(repo: Path) -> list[tuple[Version, str]]:
    """The repository's PEP 440 release tags, oldest first."""
    tags = []
    for tag in git(repo, "tag", "--list", "v*").split():
        try:
            tags.append((Version(tag), tag))
        except InvalidVersion:
            continue
    return sorted(tags)


@pytest.mark.parametrize("data", ANSWER_SETS)
def test_update_from_previous_release_to_head(
    data: dict[str, Any], tmp_path: Path, project_python: Path, cache_dir: Path
) -> None:
    tags = release_tags(ROOT)
    if not tags:
        pytest.skip("this repository has no v* release tag yet; the first release (see CHANGELOG.md) adds one")
    previous = tags[-1][1]
    # A clone keeps the real tags and history; the working tree on top of it is the next release.
    template = tmp_path / "template"
    git(tmp_path, "clone", "-q", "--no-local", str(ROOT), str(template))
    project = render(template, tmp_path / "service", data, vcs_ref=previous)
    commit_project(project)
    make_user_edits(project)
    copy_template(template)
    git_save(template, "working tree")

    update(project, "HEAD")

    assert_user_edits_survived(project)
    assert_clean_merge(project)
    assert answers(project)["_commit"] != previous
    run_project_checks(project, project_python, cache_dir)


# ---------------------------------------------------------------- migrations

RENAME_HOOK = ROOT / "hooks" / "rename_answer.py"


def run_rename_hook(answers_file: Path, old: str, new: str) -> None:
    subprocess.run([sys.executable, str(RENAME_HOOK), str(answers_file), old, new], check=True, capture_output=True)


def test_rename_hook_is_idempotent(tmp_path: Path) -> None:
    answers_file = tmp_path / ".copier-answers.yml"
    answers_file.write_text("# Changes here will be overwritten by Copier\n_commit: v0.0.1\nstore: s3\nauth: jwt\n")
    run_rename_hook(answers_file, "store", "object_store")
    once = answers_file.read_text()
    run_rename_hook(answers_file, "store", "object_store")
    assert answers_file.read_text() == once
    assert once.startswith("# Changes here will be overwritten by Copier\n")
    assert yaml.safe_load(once) == {"_commit": "v0.0.1", "object_store": "s3", "auth": "jwt"}


def test_rename_hook_keeps_an_answer_given_under_the_new_name(tmp_path: Path) -> None:
    answers_file = tmp_path / ".copier-answers.yml"
    answers_file.write_text("store: none\nobject_store: s3\n")
    run_rename_hook(answers_file, "store", "object_store")
    assert yaml.safe_load(answers_file.read_text()) == {"object_store": "s3"}


def store_migration_version() -> str:
    config = yaml.safe_load((ROOT / "copier.yml").read_text())
    versions = [m["version"] for m in config["_migrations"] if "object_store" in m["command"]]
    assert len(versions) == 1, "copier.yml must carry exactly one migration from `store` to `object_store`"
    return str(versions[0])


def test_update_migrates_a_renamed_answer(tmp_path: Path) -> None:
    """A service rendered when the question was still called `store` keeps its answer under the new name."""
    new_version = store_migration_version()
    template = make_template_repo(tmp_path / "template", tag="v0.0.1")
    # Rewrite the tagged release to the old question name: `store` asked, `object_store` derived from it.
    config = template / "copier.yml"
    old_config = config.read_text().replace("\nobject_store:\n", "\nstore:\n", 1)
    config.write_text(old_config + '\nobject_store:\n  type: str\n  default: "{{ store }}"\n  when: false\n')
    git(template, "tag", "-d", "v0.0.1")
    git_save(template, "release with the old question name", tag="v0.0.1")
    project = render(template, tmp_path / "service", {"store": "s3"}, vcs_ref="v0.0.1")
    assert answers(project)["store"] == "s3" and "object_store" not in answers(project)
    commit_project(project)
    shutil.copy2(ROOT / "copier.yml", config)
    git_save(template, "rename store to object_store", tag=f"v{new_version}")

    update(project, f"v{new_version}")

    migrated = answers(project)
    assert migrated["object_store"] == "s3"
    assert "store" not in migrated
    assert migrated["_commit"] == f"v{new_version}"
    assert_clean_merge(project)
    # The s3 answer still shapes the service: its S3 dependency was not dropped back to the default.
    assert "aiobotocore" in (project / "pyproject.toml").read_text()


# ---------------------------------------------------------------- the rendered CI's update check


def workflow_step(project: Path, job: str, name: str) -> str:
    workflow = yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text())
    return str(next(step["run"] for step in workflow["jobs"][job]["steps"] if step.get("name") == name))


def test_ci_reports_when_the_service_is_behind_its_template(tmp_path: Path) -> None:
    template = make_template_repo(tmp_path / "template", tag="v1.0.0")
    project = render(template, tmp_path / "service")
    commit_project(project)
    script = workflow_step(project, "template-update", "copier check-update")
    # The copier installed here stands in for the one `uvx --from <spec> copier` downloads in CI.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    uvx = bin_dir / "uvx"
    uvx.write_text(f'#!/bin/sh\nshift 3\nexec "{sys.executable}" -m copier "$@"\n')
    uvx.chmod(0o755)
    summary = tmp_path / "summary.md"

    def check() -> tuple[str, str]:
        summary.write_text("")
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GITHUB_STEP_SUMMARY": str(summary)}
        # The shell GitHub Actions runs `run:` steps in.
        result = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout, summary.read_text()

    stdout, report = check()
    assert "::warning" not in stdout
    assert "Up to date with template" in report

    git_save(template, "template release 2.0.0", tag="v2.0.0")
    stdout, report = check()
    assert "::warning title=Template update available::" in stdout
    assert "1.0.0" in report and "2.0.0" in report


# ---------------------------------------------------------------- organisation defaults (docs/platform-teams.md)


def test_org_defaults_file_is_recorded_and_kept_by_updates(tmp_path: Path) -> None:
    org_defaults = ROOT / "docs" / "examples" / "org-defaults.yml"
    expected = yaml.safe_load(org_defaults.read_text())
    template = make_template_repo(tmp_path / "template", tag="v1.0.0")
    project = tmp_path / "service"
    copier_cli = [sys.executable, "-m", "copier"]
    subprocess.run(
        [*copier_cli, "copy", "--trust", "--defaults", "--quiet", "--vcs-ref", "v1.0.0"]
        + ["--data-file", str(org_defaults), "--data", "auth=api_key", str(template), str(project)],
        check=True,
        capture_output=True,
    )
    recorded = answers(project)
    # The command line wins over the organisation's file.
    assert recorded["auth"] == "api_key"
    assert {k: recorded[k] for k in expected if k != "auth"} == {k: v for k, v in expected.items() if k != "auth"}
    commit_project(project)
    git_save(template, "template release 2.0.0", tag="v2.0.0")

    update(project, "v2.0.0")

    assert {k: v for k, v in answers(project).items() if not k.startswith("_")} == {
        k: v for k, v in recorded.items() if not k.startswith("_")
    }
