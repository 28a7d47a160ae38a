"""Where a cell's time goes: py-spy samples of one client's cell in its steady state.

    python3 bench/profile_cell.py                       # tarantool_pool ConnectionPool, call, 64 and 1 threads
    python3 bench/profile_cell.py --client tp-conn --workload select --concurrency 16

Starts the test cluster, runs the cell (``bench/cell.py``, the same code the
benchmark runs) for ``--seconds`` after a warm-up, and attaches
``py-spy record --pid`` (from bench/.venv) for the steady part only: once to
every thread on the CPU ("active": py-spy leaves out threads blocked in a
lock, a recv or a sleep), once only to the thread that holds the GIL ("gil":
with a CPU-bound Python client, the GIL is the bottleneck, so this is what
requests/s is made of).  ``--nonblocking`` keeps py-spy from pausing the
process.  Writes bench/PROFILE.md (tables) and bench/profile/ (raw stacks,
collapsed format, for flamegraph tools).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

PY_SPY = harness.VENV_DIR / "bin" / "py-spy"
RAW_DIR = harness.BENCH_DIR / "profile"
PROFILE_MD = harness.BENCH_DIR / "PROFILE.md"
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
TOP = 25


def thread_kind(name: str) -> str:
    if name.startswith("tarantool_pool-watch-"):
        return "link watchers (peer hang-up on an idle link)"
    if name.startswith("tarantool_pool-"):
        return "pool unit workers (box.info refresh)"
    if name.startswith("bench-"):
        return "caller threads (bench workers: request + harness loop)"
    if name.startswith("Thread-"):
        return "peer's threads"
    return "main thread / unnamed"


def parse_raw(path: Path) -> dict[str, Any]:
    """Collapsed stacks -> samples per thread kind, self and inclusive samples per function."""
    by_kind: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0]
        name = thread.split(": ", 1)[1] if ": " in thread else ""
        frames = frames[1:] if thread.startswith("thread (") else frames
        functions = [describe_frame(frame) for frame in frames]
        if not functions:
            continue
        total += count
        by_kind[thread_kind(name)] += count
        self_time[functions[-1]] += count
        for function in set(functions):
            inclusive[function] += count
    return {"total": total, "by_kind": by_kind, "self": self_time, "inclusive": inclusive}


def describe_frame(frame: str) -> str:
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    return f"{match['func']} ({match['file']})"


def profile_cell(client: harness.Client, workload: str, concurrency: int, target: dict[str, Any], seconds: float,
                 gil: bool) -> dict[str, Any]:
    warmup = 1.0
    spec = harness.make_spec(client, workload, concurrency, target, duration=seconds + 2.5, warmup=warmup)
    command = harness.cell_command(spec, harness.VENV_PYTHON)
    cell = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=harness.ROOT,
                            env={**os.environ, "PYTHONPATH": str(harness.ROOT)})
    mode = "gil" if gil else "active"
    raw = RAW_DIR / f"{client.key}-{workload}-c{concurrency}-{mode}.txt"
    try:
        time.sleep(warmup + 1.0)  # connect and warm-up; sample the steady state only
        spy = subprocess.run([str(PY_SPY), "record", "--pid", str(cell.pid), "--duration", str(int(seconds)),
                              "--rate", "250", "--nonblocking", "--threads", "--format", "raw", "--output", str(raw),
                              *(["--gil"] if gil else [])], check=False, capture_output=True, text=True)
        out, err = cell.communicate(timeout=seconds + 60)
    finally:
        if cell.poll() is None:
            cell.kill()
            cell.wait()
    result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"status": "failed", "reason": err[-300:]}
    if spy.returncode != 0 or not raw.exists():
        return {"mode": mode, "raw": raw, "cell": result, "error": (spy.stderr or spy.stdout)[-500:]}
    return {"mode": mode, "raw": raw, "cell": result, **parse_raw(raw)}


def table(counter: collections.Counter[str], total: int, limit: int = TOP) -> list[str]:
    lines = ["| share | samples | function (file) |", "|---:|---:|---|"]
    for function, count in counter.most_common(limit):
        lines.append(f"| {100 * count / total:.1f}% | {count} | `{function}` |")
    return lines


def py_spy_version() -> str:
    done = subprocess.run([str(PY_SPY), "--version"], check=False, capture_output=True, text=True)
    return done.stdout.strip() or "py-spy"


def markdown(runs: list[dict[str, Any]], client: harness.Client, workload: str, seconds: float) -> str:
    out = [f"# Profile: {client.label}, `{workload}`\n",
           (f"{py_spy_version()} `record --pid --nonblocking "
           f"--threads --rate 250` attached for {seconds:g} s to the steady state of the cell (after connect and "
           "a 1 s warm-up). Command: `python3 bench/profile_cell.py`. Raw collapsed stacks: "
           "`bench/profile/` (not committed). *active*: every thread that was running Python code (threads "
           "blocked in a lock wait, recv or sleep are left out); *gil*: only the thread holding the GIL. "
           "The cell's own figures were measured with py-spy attached, so they are a little lower than the "
           "benchmark's.\n"),
           ("*self*: samples whose innermost frame is the function; *inclusive*: samples with the function "
            "anywhere on the stack. What it means: FINDINGS.md (hand-written).\n")]
    for run in runs:
        cell = run["cell"]
        figures = (f"{cell['rps']:,.0f} req/s, p50 {cell['p50_us']:.0f} µs, CPU {cell['cpu_us_per_req']:.1f} µs/req "
                   f"(user {cell['user_us_per_req']:.1f} + sys {cell['sys_us_per_req']:.1f}), "
                   f"{cell['switches_per_req']:.2f} context switches/req"
                   if cell.get("status") == "ok" else f"cell {cell.get('status')}: {cell.get('reason')}")
        out.append(f"## {run['concurrency']} thread(s), {run['mode']}: {figures}\n")
        if "error" in run:
            out.append(f"py-spy failed: `{run['error']}`\n")
            continue
        total = run["total"] or 1
        out.append("Samples per thread kind:\n")
        out.append("| share | samples | threads |\n|---:|---:|---|")
        for kind, count in run["by_kind"].most_common():
            out.append(f"| {100 * count / total:.1f}% | {count} | {kind} |")
        out.append("\nTop functions, self:\n")
        out += table(run["self"], total)
        out.append("\nTop functions, inclusive:\n")
        out += table(run["inclusive"], total)
        out.append("")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--client", default="tp-pool", choices=[c.key for c in harness.CLIENTS if c.key != "netbox"])
    parser.add_argument("--workload", default="call", choices=harness.WORKLOADS)
    parser.add_argument("--concurrency", default="64,1", help="comma-separated (default 64,1)")
    parser.add_argument("--seconds", type=float, default=5.0, help="sampled seconds per profile")
    parser.add_argument("--output", type=Path, default=PROFILE_MD)
    args = parser.parse_args(argv)
    harness.reexec_in_venv(__file__, argv)
    if not PY_SPY.exists():
        print("py-spy is not installed in bench/.venv (see bench/requirements.txt)", file=sys.stderr)
        return 1
    client = harness.CLIENTS_BY_KEY[args.client]
    RAW_DIR.mkdir(parents=True, exist_ok=True)
    cluster = harness.import_cluster().Cluster()
    runs = []
    try:
        cluster.up()
        harness.prefill(cluster)
        target = harness.cluster_target(cluster)
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            for gil in (False, True):
                run = profile_cell(client, args.workload, concurrency, target, args.seconds, gil)
                run["concurrency"] = concurrency
                runs.append(run)
                print(f"c={concurrency} {run['mode']}: {run.get('total', 0)} samples -> {run['raw']}", flush=True)
    finally:
        cluster.down()
    args.output.write_text(markdown(runs, client, args.workload, args.seconds))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
