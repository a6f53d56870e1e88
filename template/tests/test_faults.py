"""The soak's fault schedule: repeatable from its seed, fitted to the soak's length, never two faults on one
target at once (so one replica is always up), every kind in a long soak."""

from __future__ import annotations

from bench.faults import KINDS, Fault, schedule


def windows(faults: list[Fault]) -> list[tuple[str, float, float]]:
    """What each fault hits, and when (a second more than it lasts: a kill and a restart take their time)."""
    return [(KINDS[f.kind][0], f.at, f.at + KINDS[f.kind][1] + 1) for f in faults]


def test_a_seed_repeats_its_schedule_and_another_differs() -> None:
    assert schedule(7, 600) == schedule(7, 600)
    assert schedule(7, 600) != schedule(8, 600)


def test_a_short_soak_keeps_the_kinds_that_fit_in_order() -> None:
    faults = schedule(26, 40)
    assert sorted(f.kind for f in faults) == sorted(["pg_kill_backends", "replica_kill", "pg_restart"])
    assert all(4 <= f.at < 40 - 8 for f in faults)


def test_a_long_soak_has_every_kind_in_rounds_some_overlapping() -> None:
    faults = schedule(26, 600)
    assert {f.kind for f in faults} == set(KINDS)
    assert len(faults) >= 2 * len(KINDS)
    ordered = sorted(faults, key=lambda f: f.at)
    assert any(b.at <= a.at + KINDS[a.kind][1] for a, b in zip(ordered, ordered[1:], strict=False))
    assert all(30 <= f.at < 500 for f in faults)


def test_faults_at_once_never_share_a_target() -> None:
    for seed in range(20):
        spans = windows(schedule(seed, 600))
        for n, (target, start, end) in enumerate(spans):
            for other, other_start, other_end in spans[n + 1 :]:
                assert target != other or other_start >= end or other_end <= start, (seed, spans)
