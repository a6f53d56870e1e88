"""Re-rendering a service with its recorded answers changes nothing (so `copier update` diffs only what a
release changed), and the Renovate config that proposes those updates is valid and finds the release."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import copier
import pytest
import yaml

from .checks import check_jsonschema
from .rendering import git, git_save, render


@pytest.fixture(scope="module")
def project(template_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One rendering for the module: each costs seconds in the template's CI."""
    return render(template_repo, tmp_path_factory.mktemp("rerender") / "service", {"auth": "api_key"})


def test_rerender_with_recorded_answers_changes_nothing(project: Path) -> None:
    assert (project / "uv.lock").is_file(), "copier's task did not lock the dependencies"
    git(project, "init", "-q", "-b", "main")
    git_save(project, "rendered")
    copier.run_recopy(str(project), defaults=True, overwrite=True, unsafe=True, quiet=True)
    assert git(project, "status", "--porcelain") == ""


def test_renovate_config_is_valid_and_tracks_the_template_release(project: Path) -> None:
    config = project / "renovate.json"
    schema = subprocess.run(
        [check_jsonschema(), "--builtin-schema", "vendor.renovate", str(config)], capture_output=True, text=True
    )
    assert schema.returncode == 0, schema.stdout + schema.stderr
    renovate = json.loads(config.read_text())
    assert renovate["schedule"] and renovate["lockFileMaintenance"]["enabled"]
    (manager,) = renovate["customManagers"]
    # As a service rendered from the template's GitHub repository records it.
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    recorded = (project / ".copier-answers.yml").read_text().replace(answers["_src_path"], "gh:acme/agent-template")
    # Renovate's regexes name groups as (?<name>...), Python's as (?P<name>...).
    match = re.search(manager["matchStrings"][0].replace("(?<", "(?P<"), recorded)
    assert match and match["currentValue"] == "v1.0.0" and match["packageName"] == "acme/agent-template"
    assert any(re.search(pattern.strip("/"), ".copier-answers.yml") for pattern in manager["managerFilePatterns"])
    (rule,) = [rule for rule in renovate["packageRules"] if manager["depNameTemplate"] in rule.get("matchDepNames", [])]
    update = rule["postUpgradeTasks"]["commands"][-1]
    assert "copier update --trust --defaults --vcs-ref {{{newVersion}}}" in update
