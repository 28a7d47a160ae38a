"""The benchmark harness (bench/) runs, so it cannot rot: one tiny cell per client.

Each cell goes through the harness's own path (``harness.run_cell``: a fresh
process running ``bench/cell.py``, or ``tarantool bench/netbox_client.lua``)
against the session's cluster.  Nothing is timed: a cell must produce a sane
result (requests counted, latencies and CPU figures present, no errors), and
the clients that promise it (tarantool_pool's, asynctnt, net.box, one
tarantool-python Connection per thread) must deliver no reply to the wrong
caller.  tarantool-python's ConnectionPool is expected to mix replies up under
concurrency: its mismatches are only counted.

Which interpreter runs a cell:
- tarantool_pool's clients run with this test's own Python, so the tree under
  test is what is measured (``run_cell`` puts the tree first on PYTHONPATH);
- the peers (tarantool-python, asynctnt) are bench-only dependencies that live
  in ``bench/.venv``, which ``make test`` creates before the tests run (its
  ``bench-venv`` target; ``make bench-quick`` too).  Their cells run with that
  venv's Python; only when the venv is missing (pytest run by hand) or a peer
  could not be installed on this machine are they skipped, with a reason that
  says so, rather than installing packages from a test;
- net.box runs with the tarantool binary the cluster uses.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import harness  # noqa: E402

KEYS = 200  # rows prefilled for select: enough for the check, quick to write
TINY = {"duration": 0.3, "warmup": 0.1, "keys": KEYS}
# Clients that never hand a reply to the wrong caller.
NO_MISMATCH = {"tp-pool", "tp-pool-ro", "tp-conn", "tp-aio", "tt-conn", "asynctnt", "netbox", "floor"}

_venv_versions: dict[str, str | None] | None = None


def bench_venv_versions() -> dict[str, str | None]:
    global _venv_versions
    if _venv_versions is None:
        _venv_versions = harness.peer_versions(harness.VENV_PYTHON) if harness.VENV_PYTHON.exists() else {}
    return _venv_versions


def python_for(client: harness.Client) -> str:
    """This test's Python for tarantool_pool's clients; bench/.venv's for a peer (or skip)."""
    if client.package is None:
        return sys.executable
    if not harness.VENV_PYTHON.exists():
        pytest.skip(f"{client.package} is a bench-only dependency and bench/.venv does not exist "
                    "(`make test` and `make bench-quick` create it)")
    if not bench_venv_versions().get(client.package):
        pytest.skip(f"{client.package} is not importable in bench/.venv (`make bench-quick` installs it; "
                    "if it cannot be installed here, the benchmark reports its cells as not available)")
    return str(harness.VENV_PYTHON)


@pytest.fixture(scope="module")
def target(cluster: Any) -> dict[str, Any]:
    harness.prefill(cluster, KEYS)
    return harness.cluster_target(cluster)


def check_sane(result: dict[str, Any], client_key: str, workload: str) -> None:
    assert result.get("status") == "ok", result
    assert isinstance(result["requests"], int) and result["requests"] > 0, result
    assert result["rps"] > 0 and result["seconds"] > 0, result
    for figure in ("p50_us", "p99_us", "cpu_us_per_req"):
        assert isinstance(result[figure], (int, float)) and math.isfinite(result[figure]) and result[figure] > 0, \
            (figure, result)
    assert result["p50_us"] <= result["p99_us"], result
    if client_key == "tt-pool":
        assert isinstance(result["errors"], int), result
    else:
        assert result["errors"] == 0, result
    if workload == "ping":
        assert result["mismatches"] is None, result  # nothing in a ping reply to check
    elif client_key in NO_MISMATCH:
        assert result["mismatches"] == 0, result
    else:
        assert isinstance(result["mismatches"], int) and result["mismatches"] >= 0, result


@pytest.mark.parametrize("client_key", [client.key for client in harness.CLIENTS])
def test_one_call_cell_per_client(target: dict[str, Any], client_key: str) -> None:
    client = harness.CLIENTS_BY_KEY[client_key]
    python = python_for(client)
    spec = harness.make_spec(client, "call", 4, target, **TINY)
    check_sane(harness.run_cell(spec, python), client_key, "call")


@pytest.mark.parametrize("workload", ["ping", "select", "replace"])
def test_pool_cell_per_workload(target: dict[str, Any], workload: str) -> None:
    client = harness.CLIENTS_BY_KEY["tp-pool"]
    spec = harness.make_spec(client, workload, 2, target, **TINY)
    check_sane(harness.run_cell(spec, sys.executable), client.key, workload)


def test_netbox_select_cell(target: dict[str, Any]) -> None:
    spec = harness.make_spec(harness.CLIENTS_BY_KEY["netbox"], "select", 2, target, **TINY)
    check_sane(harness.run_cell(spec, sys.executable), "netbox", "select")


def test_a_cell_that_cannot_connect_fails_with_its_reason(target: dict[str, Any]) -> None:
    closed = dict(target, master={"host": "127.0.0.1", "port": 1})  # nothing listens on port 1
    spec = harness.make_spec(harness.CLIENTS_BY_KEY["tp-conn"], "ping", 1, closed, **TINY)
    result = harness.run_cell(spec, sys.executable)
    assert result["status"] == "failed", result
    assert "127.0.0.1:1" in result["reason"] or "refused" in result["reason"].lower(), result


def test_medians_and_report_from_cell_records(target: dict[str, Any]) -> None:
    """The report path: records of real cells -> medians -> RESULTS.md text with verdict lines."""
    import report

    records = []
    for round_number in (1, 2):
        for key in ("tp-pool", "tp-conn"):
            spec = harness.make_spec(harness.CLIENTS_BY_KEY[key], "select", 1, target, **TINY, seed=round_number)
            records.append({"round": round_number, "client": key, "workload": "select", "concurrency": 1,
                            **harness.run_cell(spec, sys.executable)})
    records.append({"round": 1, "client": "asynctnt", "workload": "select", "concurrency": 1,
                    "status": "not available", "reason": "asynctnt is not importable in bench/.venv"})
    summary = harness.summarize(records)
    cell = summary[("tp-pool", "select", 1)]
    assert cell["status"] == "ok" and cell["ok_rounds"] == 2 and cell["errors"] == 0 and cell["mismatches"] == 0
    assert cell["rps"] > 0 and cell["requests"] > 0
    assert summary[("asynctnt", "select", 1)]["status"] == "not available"
    run = {
        "plan": "quick", "command": "make bench-quick", "started": "-", "finished": "-",
        "machine": {"nproc": 2, "cpu_model": "?", "memory": "?", "os": "?", "python": sys.version.split()[0],
                    "load_before": "0", "load_after": "0"},
        "versions": {"tarantool_server": "?", "git": "?"},
        "example_spec": {}, "example_netbox_spec": {}, "records": records,
    }
    text = report.results_markdown(run, summary)
    assert "PASS         zero errors and mismatches in every tarantool_pool cell" in text
    assert "asynctnt is not importable in bench/.venv" in text  # not available, with the reason
