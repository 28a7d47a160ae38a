"""Chaos under load: the proof of reliability (docs/reliability.md).

The short run (25 s, a handful of faults) is part of ``make test``; ``make
chaos`` runs the long one through ``tests/chaos.py``.  The environment can
change the run: ``CHAOS_SEED`` replays a fault schedule, ``CHAOS_SECONDS``
makes the run longer.  The figures are printed even when output is captured.

The checks of the run itself live in ``chaos.ChaosReport.problems``; the fast
tests below make sure each of them fails the run when its promise is broken,
so that a green chaos run means something.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import chaos
import pytest
from cluster import Cluster

from tarantool_pool.errors import (
    ConnectionClosedError,
    DatabaseError,
    DuplicateKeyError,
    NetworkError,
    PoolTopologyError,
    ProtocolError,
    ReadOnlyError,
    RequestTimeoutError,
    SyncQuorumTimeoutError,
    UnknownOutcomeError,
    UnknownOutcomeTimeoutError,
)

SHORT_SECONDS = 25.0


def chaos_config() -> chaos.ChaosConfig:
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1 << 31))
    seconds = float(os.environ.get("CHAOS_SECONDS") or SHORT_SECONDS)
    return chaos.ChaosConfig(seconds=seconds, seed=seed, max_faults=max(6, int(seconds // 3)))


@pytest.mark.slow
@pytest.mark.timeout(float(os.environ.get("CHAOS_SECONDS") or SHORT_SECONDS) + 240)
def test_under_chaos_every_acknowledged_write_survives_every_reply_reaches_its_caller_every_deadline_holds(
        fresh_cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    config = chaos_config()

    def log(line: str) -> None:  # live progress, even when pytest captures the output
        with capsys.disabled():
            print(line, flush=True)

    log("")
    report = chaos.ChaosRun(fresh_cluster, config, log=log).run()
    log(report.text())
    fresh_cluster.restore()
    blocked = chaos.takes_writes(fresh_cluster)
    problems = report.problems()
    assert not problems, f"chaos run failed (replay with CHAOS_SEED={config.seed}):\n" + "\n".join(problems)
    assert blocked is None, f"after the run (seed {config.seed}) inst1 takes no write: {blocked}"
    assert len(report.faults) >= 4, f"only {len(report.faults)} faults injected (seed {config.seed})"
    assert report.faults_by_kind.get("kill_master"), f"the master was never killed (seed {config.seed})"


# ----------------------------------------------------------------------------
# the checks themselves


def passing_report() -> chaos.ChaosReport:
    return chaos.ChaosReport(seed=1, config=chaos.ChaosConfig(), acked=10, writes=12, reads=30)


@pytest.mark.parametrize("broken", [
    "missing_acked", "never_attempted", "duplicates", "not_applied_present", "mismatches", "overlong",
    "unexpected_errors", "leaked_threads", "harness_problems",
])
def test_each_broken_promise_fails_the_run(broken: str) -> None:
    report = passing_report()
    assert report.problems() == []
    getattr(report, broken).append("evidence")
    problems = report.problems()
    assert len(problems) == 1 and "evidence" in problems[0], problems
    assert "FAIL" in report.text() and "PASS" not in report.text()


def test_a_run_without_any_acknowledged_write_fails() -> None:
    report = passing_report()
    report.acked = 0
    assert report.problems() == ["no write was acknowledged at all"]


def sent_error(error: NetworkError, sent: bool | None) -> NetworkError:
    error.request_sent = sent
    return error


@pytest.mark.parametrize(("error", "verdict"), [
    (UnknownOutcomeError(104, "reset"), "unknown"),
    (UnknownOutcomeTimeoutError(0, "deadline"), "unknown"),
    (PoolTopologyError(0, "no master"), "not_applied"),
    (ReadOnlyError(7, "read only"), "not_applied"),
    (sent_error(ConnectionClosedError(0, "closed before the write"), False), "not_applied"),
    (SyncQuorumTimeoutError(216, "quorum"), "rejected"),
    (DatabaseError(40, "Failed to write to disk"), "rejected"),
    (DatabaseError(214, "uncommitted foreign sync txns"), "rejected"),
    # A write must never end like these: each one means a broken promise of the pool.
    (sent_error(RequestTimeoutError(0, "deadline"), None), "unexpected"),  # should say the outcome is unknown
    (sent_error(ConnectionClosedError(0, "closed after the write"), None), "unexpected"),
    (DuplicateKeyError(3, "duplicate"), "unexpected"),  # a retried write that had been applied
    (ProtocolError(0, "garbage"), "unexpected"),
    (DatabaseError(32, "lua error"), "unexpected"),
])
def test_write_errors_are_classified_by_what_they_say_about_the_outcome(error: Exception, verdict: str) -> None:
    assert chaos.classify_write_error(error) == verdict
    if verdict != "unexpected":
        assert type(error).__name__ in chaos.ACCEPTABLE_WRITE_ERRORS


def test_the_figures_name_every_number_the_docs_quote() -> None:
    report = passing_report()
    report.faults.append(chaos.Fault("kill_master", "inst1", 3.0, 2.5, "promoted inst2", 0.4, {"X(1)": 2}))
    text = report.text()
    for needle in ("requests:", "acknowledged writes:", "faults injected: 1 (kill_master 1)",
                   "write errors by class:", "read errors by class:", "longest write pause",
                   "kill_master inst1 (promoted inst2)", "next ack after 0.40 s", "verdict: PASS"):
        assert needle in text, needle
    assert report.markdown("title").startswith("### title\n")


def test_record_replaces_the_last_run_section_and_keeps_the_rest(tmp_path: Path) -> None:
    doc = tmp_path / "reliability.md"
    doc.write_text("# Reliability\n\nintro\n\n## Last run\n")
    first, second = passing_report(), passing_report()
    second.seed = 777
    chaos.record(first, doc)
    chaos.record(second, doc)
    text = doc.read_text()
    assert text.startswith("# Reliability\n\nintro\n\n## Last run\n")
    assert text.count("## Last run") == 1 and text.count("### ") == 1
    assert "--seed 777" in text and "seed 777:" in text and "verdict: PASS" in text
