"""The benchmark's moving parts: the bench venv, the cluster, the plan, cells, medians.

``run.py`` is the command line; ``report.py`` writes RESULTS.md and the chart;
``tests/test_bench_harness.py`` drives :func:`run_cell` against the test
session's cluster so this code path stays alive.

A cell is one (client, workload, concurrency) measured in a fresh process:
``cell.py`` for the Python clients, ``netbox_client.lua`` (run by ``tarantool``)
for the server's own ceiling.  Both print one JSON line; :func:`run_cell`
turns a crash, a hang or garbage into a ``failed`` result with the reason, so a
broken cell is reported, never invented.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
CLUSTER_DIR = ROOT / "test-cluster"
VENV_DIR = BENCH_DIR / ".venv"
VENV_PYTHON = VENV_DIR / "bin" / "python"
REQUIREMENTS = BENCH_DIR / "requirements.txt"
VENV_STAMP = VENV_DIR / ".bench-installed.json"
CELL_SCRIPT = BENCH_DIR / "cell.py"
NETBOX_SCRIPT = BENCH_DIR / "netbox_client.lua"

WORKLOADS = ("ping", "select", "replace", "call")
CONCURRENCY = (1, 4, 16, 64)
PREFILL_KEYS = 10_000
# Seconds a cell may take beyond its warm-up and window (connect, stop, exit).
CELL_SLACK = 45.0


@dataclasses.dataclass(frozen=True)
class Client:
    key: str  # short id, used in results.json and on the command line
    label: str  # what the tables and the chart say
    impl: str  # what cell.py runs ("netbox" runs the Lua client)
    read_mode: str = "ANY"  # pools only: the mode of ping/select/call (writes are always RW)
    package: str | None = None  # the peer package it needs in the bench venv
    ours: bool = False  # a tarantool_pool client: must have zero errors and mismatches
    workloads: tuple[str, ...] = WORKLOADS


CLIENTS: tuple[Client, ...] = (
    Client("tp-pool", "tarantool_pool ConnectionPool (reads ANY)", "tarantool_pool.ConnectionPool", ours=True),
    Client("tp-pool-ro", "tarantool_pool ConnectionPool (reads PREFER_RO)", "tarantool_pool.ConnectionPool",
           read_mode="PREFER_RO", ours=True, workloads=("ping", "select", "call")),  # replace is RW either way
    Client("tp-conn", "tarantool_pool Connection (master)", "tarantool_pool.Connection", ours=True),
    Client("tp-aio", "tarantool_pool aio.ConnectionPool, N tasks on 1 loop (reads ANY)",
           "tarantool_pool.aio.ConnectionPool", ours=True),
    Client("tt-pool", "tarantool-python ConnectionPool (reads ANY)", "tarantool.ConnectionPool", package="tarantool"),
    Client("tt-conn", "tarantool-python Connection, one per thread (master)", "tarantool.Connection",
           package="tarantool"),
    Client("asynctnt", "asynctnt, N tasks on 1 connection (master)", "asynctnt", package="asynctnt"),
    Client("netbox", "Lua net.box, N fibers on 1 connection (master): server ceiling", "netbox"),
    # Not a Tarantool client: N threads woken one by one by a single thread, no server (cell.py).
    Client("floor", "thread hand-off floor: no server, each request wakes its thread", "thread-floor",
           workloads=("select", "call")),
)
CLIENTS_BY_KEY = {client.key: client for client in CLIENTS}


@dataclasses.dataclass(frozen=True)
class Plan:
    name: str
    rounds: int
    duration: float
    warmup: float
    cells: tuple[tuple[str, int], ...]  # (workload, concurrency), in the order they run
    clients: tuple[str, ...] = tuple(client.key for client in CLIENTS)


FULL = Plan("full", rounds=3, duration=3.0, warmup=0.5,
            cells=tuple((workload, threads) for workload in WORKLOADS for threads in CONCURRENCY))
# Under two minutes: what the targets are stated in (select and call at 1, 16, 64)
# plus ping and replace at 16, one round of 1 s windows.
QUICK = Plan("quick", rounds=1, duration=1.0, warmup=0.25,
             cells=(("select", 1), ("select", 16), ("select", 64), ("call", 1), ("call", 16), ("call", 64),
                    ("ping", 16), ("replace", 16)))
PLANS = {"full": FULL, "quick": QUICK}


# -- the bench venv ----------------------------------------------------------------------

def requirement_lines() -> list[str]:
    lines = []
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def venv_fingerprint() -> str:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    for name in ("setup.cfg", "setup.py"):
        path = ROOT / name
        if path.exists():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_venv(log: Callable[[str], None] = print) -> dict[str, str]:
    """Create bench/.venv and install the pinned peers, the chart library and the project.

    Each requirement is installed on its own, so one that cannot be had here
    (no wheel, no compiler) leaves the others usable; its pip error is kept in
    the stamp file and the report says its cells are not available.  Returns
    {requirement: error} for what failed.
    """
    fingerprint = venv_fingerprint()
    if VENV_STAMP.exists() and VENV_PYTHON.exists():
        stamp = json.loads(VENV_STAMP.read_text())
        if stamp.get("fingerprint") == fingerprint:
            return dict(stamp.get("failed", {}))
    if not VENV_PYTHON.exists():
        log(f"creating {VENV_DIR.relative_to(ROOT)}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV_DIR)], check=True)
    failed: dict[str, str] = {}
    pip = [str(VENV_PYTHON), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for requirement in [*requirement_lines(), f"-e {ROOT}"]:
        log(f"bench venv: pip install {requirement}")
        done = subprocess.run([*pip, *requirement.split(" ", 1)], capture_output=True, text=True)
        if done.returncode != 0:
            lines = [line for line in (done.stderr + done.stdout).splitlines()
                     if line.strip() and "is ignored" not in line]
            failed[requirement] = " | ".join(lines[-3:])[:400] or f"pip exited {done.returncode}"
            log(f"bench venv: {requirement} FAILED: {failed[requirement]}")
    VENV_STAMP.write_text(json.dumps({"fingerprint": fingerprint, "failed": failed}, indent=2))
    return failed


def in_bench_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV_DIR.resolve()


def reexec_in_venv(script: str | os.PathLike[str], argv: list[str]) -> None:
    """Set up bench/.venv if needed and replace this process by ``script`` run inside it."""
    if not in_bench_venv():
        ensure_venv()
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(script).resolve()), *argv])


def peer_versions(python: str | os.PathLike[str]) -> dict[str, str | None]:
    """Version of each client package importable by ``python`` (None: not importable)."""
    probe = (
        "import importlib, json\n"
        "out = {}\n"
        "for name in ('tarantool_pool', 'tarantool', 'asynctnt', 'msgpack', 'matplotlib'):\n"
        "    try:\n"
        "        module = importlib.import_module(name)\n"
        "        out[name] = str(getattr(module, '__version__', None) or getattr(module, 'version', '?'))\n"
        "    except Exception as exc:\n"
        "        out[name] = None\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return {}
    result: dict[str, str | None] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def unavailable_clients(versions: dict[str, str | None], install_failures: dict[str, str]) -> dict[str, str]:
    """{client key: reason} for the clients whose package the bench venv cannot import."""
    missing: dict[str, str] = {}
    for client in CLIENTS:
        if client.package is None or versions.get(client.package):
            continue
        failure = next((error for requirement, error in install_failures.items()
                        if requirement.split("=")[0].strip() == client.package), None)
        reason = f"{client.package} is not importable in bench/.venv"
        if failure:
            reason += f" (pip install failed: {failure})"
        missing[client.key] = reason
    return missing


# -- the cluster ---------------------------------------------------------------------------

def import_cluster() -> Any:
    if str(CLUSTER_DIR) not in sys.path:
        sys.path.insert(0, str(CLUSTER_DIR))
    import cluster as cluster_module

    return cluster_module


PREFILL_LUA = """
local space = box.space.test_int
box.begin()
for id = 1, %(keys)d do
    space:replace{id, 'name-' .. id, id}
end
box.commit()
return space:get{%(keys)d} ~= nil
"""


def prefill(cluster: Any, keys: int = PREFILL_KEYS, timeout: float = 60.0) -> None:
    """Rows 1..keys in test_int on the master, and wait until both replicas have them.

    One transaction, so a replica that has the last row has them all.
    """
    cluster.admin("inst1", PREFILL_LUA % {"keys": keys}, timeout=timeout)
    deadline = time.monotonic() + timeout
    for name in cluster.instances:
        while not cluster.admin(name, f"box.space.test_int:get{{{keys}}} ~= nil", timeout=5):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not replicate the {keys} prefilled rows within {timeout} s")
            time.sleep(0.05)


def cluster_target(cluster: Any) -> dict[str, Any]:
    """What a cell needs to know of the cluster."""
    master = cluster.instances["inst1"]
    return {
        "addrs": cluster.addrs(),
        "master": {"host": master.host, "port": master.port},
        "user": cluster.user,
        "password": cluster.password,
    }


# -- cells -----------------------------------------------------------------------------------

def make_spec(client: Client, workload: str, concurrency: int, target: dict[str, Any], *, duration: float,
              warmup: float, keys: int = PREFILL_KEYS, seed: int = 1) -> dict[str, Any]:
    return {
        "client": client.impl,
        "read_mode": client.read_mode,
        "workload": workload,
        "concurrency": concurrency,
        "duration": duration,
        "warmup": warmup,
        "keys": keys,
        "seed": seed,
        **target,
    }


def tarantool_command() -> str:
    return (import_cluster().tarantool_binary() or shutil.which("tarantool")
            or "tarantool")


def cell_command(spec: dict[str, Any], python: str | os.PathLike[str]) -> list[str]:
    payload = json.dumps(spec, separators=(",", ":"))
    if spec["client"] == "netbox":
        return [tarantool_command(), str(NETBOX_SCRIPT), payload]
    return [str(python), str(CELL_SCRIPT), payload]


def run_cell(spec: dict[str, Any], python: str | os.PathLike[str]) -> dict[str, Any]:
    """Run one cell in a fresh process; its result, or a ``failed`` result saying why."""
    command = cell_command(spec, python)
    timeout = spec["warmup"] + spec["duration"] + CELL_SLACK
    # The tree's tarantool_pool first, whatever the interpreter has installed.
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:  # run() killed the cell's process
        return {"status": "failed", "reason": f"cell did not finish within {timeout:.0f} s",
                "stderr": _tail(exc.stderr)}
    wall = time.monotonic() - started
    result: dict[str, Any] | None = None
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:
                pass
            break
    if result is None:
        return {"status": "failed", "reason": f"cell exited {done.returncode} without a result",
                "stderr": _tail(done.stderr), "wall_seconds": round(wall, 2)}
    result["wall_seconds"] = round(wall, 2)
    if done.returncode != 0:
        result.setdefault("stderr", _tail(done.stderr))
    return result


def _tail(text: str | bytes | None, lines: int = 8) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


# -- the plan --------------------------------------------------------------------------------

def plan_cells(plan: Plan) -> list[tuple[str, int, Client]]:
    """One round, interleaved: for each (workload, concurrency), every client in turn."""
    order = []
    for workload, concurrency in plan.cells:
        for key in plan.clients:
            client = CLIENTS_BY_KEY[key]
            if workload in client.workloads:
                order.append((workload, concurrency, client))
    return order


def run_plan(plan: Plan, target: dict[str, Any], python: str | os.PathLike[str], unavailable: dict[str, str],
             log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Every round of the plan; one record per cell run (rounds kept apart)."""
    records: list[dict[str, Any]] = []
    order = plan_cells(plan)
    total = plan.rounds * len(order)
    count = 0
    for round_number in range(1, plan.rounds + 1):
        for workload, concurrency, client in order:
            count += 1
            record = {"round": round_number, "client": client.key, "workload": workload,
                      "concurrency": concurrency}
            if client.key in unavailable:
                record.update(status="not available", reason=unavailable[client.key])
            else:
                spec = make_spec(client, workload, concurrency, target, duration=plan.duration,
                                 warmup=plan.warmup, seed=round_number)
                record["load_before"] = round(os.getloadavg()[0], 2)  # 1-minute load: how busy the machine was
                record.update(run_cell(spec, python))
            records.append(record)
            log(f"[{count}/{total}] round {round_number} {workload:7s} c={concurrency:<3d} "
                f"{client.label[:48]:48s} {describe(record)}")
    return records


def describe(record: dict[str, Any]) -> str:
    if record.get("status") != "ok":
        return f"{record.get('status', 'failed').upper()}: {record.get('reason', '?')}"
    text = (f"{record['rps']:9,.0f} req/s  p50 {record['p50_us']:8.1f} us  p99 {record['p99_us']:8.1f} us  "
            f"cpu {record['cpu_us_per_req']:6.1f} us/req  err {record['errors']}")
    if record.get("mismatches") is not None:
        text += f"  mism {record['mismatches']}"
    return text


# -- medians -----------------------------------------------------------------------------------

FIGURES = ("rps", "p50_us", "p99_us", "cpu_us_per_req", "user_us_per_req", "sys_us_per_req", "switches_per_req")


def summarize(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Per (client, workload, concurrency): medians of the figures over the rounds that ran,
    errors and mismatches summed over every round, failed rounds with their reasons."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["client"], record["workload"], record["concurrency"]), []).append(record)
    summary: dict[tuple[str, str, int], dict[str, Any]] = {}
    for key, group in groups.items():
        ok = [record for record in group if record.get("status") == "ok"]
        cell: dict[str, Any] = {"rounds": len(group), "ok_rounds": len(ok)}
        if not ok:
            statuses = {record.get("status", "failed") for record in group}
            cell["status"] = "not available" if statuses == {"not available"} else "failed"
            cell["reason"] = group[0].get("reason", "?")
        else:
            cell["status"] = "ok"
            for figure in FIGURES:
                values = [record[figure] for record in ok if is_number(record.get(figure))]
                cell[figure] = statistics.median(values) if values else None
                if figure == "rps" and values:
                    cell["rps_min"], cell["rps_max"] = min(values), max(values)
            cell["requests"] = sum(record["requests"] for record in ok)
            cell["errors"] = sum(record["errors"] for record in ok)
            mismatches = [record["mismatches"] for record in ok if record.get("mismatches") is not None]
            cell["mismatches"] = sum(mismatches) if mismatches else None
            samples: list[str] = []
            for record in ok:
                samples += [sample for sample in record.get("error_samples", []) if sample not in samples]
            cell["error_samples"] = samples[:5]
            failed = [record for record in group if record.get("status") != "ok"]
            if failed:
                cell["failed_rounds"] = len(failed)
                cell["reason"] = failed[0].get("reason", "?")
        summary[key] = cell
    return summary


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and value == value  # not None, not NaN
