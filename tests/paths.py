"""Where the template repository is, and which of its parts make a template: every other test module
finds copier.yml, template/ and hooks/ through here rather than working out the repository root itself."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What a rendered service is made of; the repo's own tests, CI and caches are not.
TEMPLATE_PARTS = ("copier.yml", "template", "hooks")
