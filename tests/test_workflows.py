"""The template's own GitHub workflows are valid (the rendered ones are checked with each combination)."""

from __future__ import annotations

import subprocess

from .checks import check_jsonschema
from .paths import ROOT


def test_template_workflows_match_the_github_schema() -> None:
    workflows = sorted(str(path) for path in (ROOT / ".github" / "workflows").glob("*.yml"))
    assert workflows
    result = subprocess.run(
        [check_jsonschema(), "--builtin-schema", "vendor.github-workflows", *workflows], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
