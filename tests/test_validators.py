"""Each validator refuses a bad answer with a message that says what to type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .rendering import render

BAD_ANSWERS = [
    ({"project_name": "   "}, "Type a name"),
    ({"project_name": "x" * 61}, "60 characters"),
    ({"package_name": "Bad-Name"}, "lowercase Python identifier"),
    ({"package_name": "1agent"}, "lowercase Python identifier"),
    ({"package_name": "_private"}, "lowercase Python identifier"),
    ({"package_name": "tests"}, "clashes with a module"),
    ({"author_email": "nobody"}, "email address"),
    ({"llm_provider": "openai", "llm_model": "gpt 4"}, "model name without spaces"),
    ({"pool_min_size": 0}, "at least 1"),
    ({"pool_min_size": 20, "pool_max_size": 10}, "no smaller than pool_min_size (20)"),
    ({"pool_max_size": 5000}, "at most 1000"),
    ({"pool_max_idle": 0}, "positive number of seconds"),
    ({"pool_max_lifetime": 10, "pool_max_idle": 300}, "no shorter than pool_max_idle"),
    ({"cpu_limit": "two"}, "positive number of cores"),
    ({"memory_limit": "4GB"}, "followed by M or G"),
    ({"cpuset": "a-b"}, 'cores like "0-1"'),
    ({"llm_provider": "llama"}, "is not in"),
    ({"auth": "basic"}, "is not in"),
]


@pytest.mark.parametrize(("answers", "message"), BAD_ANSWERS, ids=[str(a) for a, _ in BAD_ANSWERS])
def test_bad_answer_is_refused(answers: dict[str, Any], message: str, template_repo: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        render(template_repo, tmp_path / "out", answers)
    assert not (tmp_path / "out" / "pyproject.toml").exists()


def test_good_answers_render(template_repo: Path, tmp_path: Path) -> None:
    answers = {"project_name": "Support Bot", "pool_min_size": 2, "pool_max_size": 2, "cpuset": "0-1"}
    project = render(template_repo, tmp_path / "out", answers)
    assert (project / "src" / "support_bot" / "app.py").exists()
    assert "pool_max_size: 2" in (project / ".copier-answers.yml").read_text()
