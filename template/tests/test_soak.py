"""The soak at a small scale: 40 s of mixed traffic through a backend kill, a replica's SIGKILL and a
PostgreSQL fast restart, and nothing acknowledged is lost, run twice, left stuck or answered with a 500
(`make soak` runs the whole schedule for minutes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .test_bench import run_benchmark

# Heavy tier: its own PostgreSQL and two service processes for most of a minute.
pytestmark = pytest.mark.heavy


def test_soak_loses_nothing_through_its_faults(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DATABASE_", "S3_"))}
    figures = run_benchmark("soak", "--seconds", "40", "--users", "3", env=env, cwd=tmp_path)
    assert figures["faults"] == "3", figures  # the three kinds that fit in 40 s
    zeros = "acked_lost duplicate_executions stuck_runs server_errors_not_503 cron_ticks_missed replicas_down"
    for key in zeros.split():
        assert figures[key] == "0", figures
    assert int(figures["acked"]) > 50, figures
    assert float(figures["availability_outside_faults"]) >= 0.99, figures
