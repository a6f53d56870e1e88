"""Copier migration: rename one answer in a service's answers file before `copier update` reads it.

Usage: python rename_answer.py ANSWERS_FILE OLD_NAME NEW_NAME

Copier runs this in the service's directory (see `_migrations` in copier.yml). Without it, an
update after a question was renamed would forget the old answer and silently fall back to the new
question's default. Running it twice is harmless: once OLD_NAME is gone there is nothing to do.
"""

from __future__ import annotations

import sys
from itertools import takewhile
from pathlib import Path
from typing import Any

import yaml


def rename_answer(answers: dict[str, Any], old: str, new: str) -> bool:
    """Move the answer from `old` to `new`; True when the answers changed."""
    if old not in answers:
        return False
    value = answers.pop(old)
    # An answer already given under the new name is the newer one; the old one only goes away.
    answers.setdefault(new, value)
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, old, new = Path(argv[0]), argv[1], argv[2]
    text = path.read_text()
    answers = yaml.safe_load(text) or {}
    if not rename_answer(answers, old, new):
        return 0
    # Keep Copier's leading comment lines; Copier rewrites the rest after the update anyway.
    header = "".join(takewhile(lambda line: line.startswith("#"), text.splitlines(keepends=True)))
    path.write_text(header + yaml.safe_dump(answers, sort_keys=False, allow_unicode=True))
    print(f"{path}: renamed answer {old!r} to {new!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
