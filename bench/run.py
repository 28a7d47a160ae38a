"""Benchmark tarantool_pool side by side with its peers; see bench/README.md.

    python3 bench/run.py            # full run (make bench): bench/RESULTS.md, bench/requests_per_second.png
    python3 bench/run.py --quick    # under two minutes (make bench-quick): bench/quick/

Run with any Python 3.9+: it sets up bench/.venv (pinned peers, matplotlib,
the project itself) and re-executes itself inside it.  Then it starts the
test cluster, prefills ``test_int``, runs every cell of the plan in a fresh
process, writes the report, and stops the cluster whatever happens.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the short plan (under two minutes)")
    parser.add_argument("--out", type=Path, help="where RESULTS.md, the chart and results.json go "
                                                 "(default: bench/ for the full run, bench/quick/ for --quick)")
    parser.add_argument("--rounds", type=int, help="override the plan's number of rounds")
    parser.add_argument("--duration", type=float, help="override the plan's measured window, seconds")
    parser.add_argument("--clients", help="comma-separated client keys to run (default: all): "
                                          + ", ".join(client.key for client in harness.CLIENTS))
    parser.add_argument("--setup", action="store_true",
                        help="only create or update bench/.venv (the peers), say what it holds, and exit "
                             "(`make test` runs this, so the harness test runs every peer's cell)")
    return parser.parse_args(argv)


def machine_facts() -> dict[str, Any]:
    cpu_model = "?"
    memory = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = f"{line.split('=', 1)[1].strip(chr(34))}, Linux {platform.release()}"
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory": memory,
        "os": os_name,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "load_before": " ".join(f"{value:.2f}" for value in os.getloadavg()),
    }


def tree_version() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=harness.ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    dirty = git("status", "--porcelain", "--", "tarantool_pool")
    return f"commit {commit}" + (" + uncommitted changes in tarantool_pool/" if dirty else "")


def tarantool_server_version() -> str:
    try:
        done = subprocess.run([harness.tarantool_command(), "--version"], capture_output=True, text=True, timeout=30)
        return done.stdout.splitlines()[0].strip() if done.stdout else "?"
    except (OSError, subprocess.SubprocessError):
        return "not installed"


def main(argv: list[str]) -> int:
    args = parse(argv)
    harness.reexec_in_venv(__file__, argv)
    install_failures = harness.ensure_venv()  # no-op when up to date; says what could not be installed
    if args.setup:
        versions = harness.peer_versions(sys.executable)
        for package, version in versions.items():
            print(f"bench venv: {package} {version or 'NOT importable'}")
        for requirement, error in install_failures.items():
            print(f"bench venv: {requirement} could not be installed: {error}")
        return 0  # a peer that cannot be installed here is reported, never fatal: its cells say why

    from report import verdict_lines, write_report

    plan = harness.QUICK if args.quick else harness.FULL
    if args.rounds:
        plan = dataclasses.replace(plan, rounds=args.rounds)
    if args.duration:
        plan = dataclasses.replace(plan, duration=args.duration)
    if args.clients:
        keys = tuple(key.strip() for key in args.clients.split(",") if key.strip())
        unknown = [key for key in keys if key not in harness.CLIENTS_BY_KEY]
        if unknown:
            print(f"unknown client(s) {', '.join(unknown)}", file=sys.stderr)
            return 2
        plan = dataclasses.replace(plan, clients=keys)
    out_dir = args.out or (harness.BENCH_DIR if plan.name == "full" else harness.BENCH_DIR / "quick")
    command = "make bench" if plan.name == "full" else "make bench-quick"

    versions = harness.peer_versions(sys.executable)
    unavailable = harness.unavailable_clients(versions, install_failures)
    for key, reason in unavailable.items():
        print(f"{harness.CLIENTS_BY_KEY[key].label}: not available: {reason}")
    cluster_module = harness.import_cluster()
    if cluster_module.tarantool_binary() is None:
        print("tarantool is not installed: `make bench` installs it (system-deps)", file=sys.stderr)
        return 1

    run: dict[str, Any] = {
        "plan": plan.name,
        "command": command,
        "started": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_facts(),
        "versions": {**versions, "tarantool_server": tarantool_server_version(), "git": tree_version()},
        "unavailable": unavailable,
    }
    cells = len(harness.plan_cells(plan)) * plan.rounds
    print(f"{plan.name} run: {cells} cells ({plan.rounds} round(s), {plan.warmup:g} s warm-up + "
          f"{plan.duration:g} s each); results into {out_dir}", flush=True)
    started = time.monotonic()
    cluster = cluster_module.Cluster()
    try:
        cluster.up()
        harness.prefill(cluster)
        target = harness.cluster_target(cluster)
        example = harness.make_spec(harness.CLIENTS[0], "call", 64, target, duration=plan.duration,
                                    warmup=plan.warmup)
        run["example_spec"] = example
        run["example_netbox_spec"] = {**example, "client": "netbox"}
        run["records"] = harness.run_plan(plan, target, sys.executable, unavailable,
                                          log=lambda line: print(line, flush=True))
    finally:
        cluster.down()
    run["finished"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    run["machine"]["load_after"] = " ".join(f"{value:.2f}" for value in os.getloadavg())
    verdicts = write_report(run, out_dir)
    print(f"\n{time.monotonic() - started:.0f} s; wrote {out_dir / 'RESULTS.md'}, "
          f"{out_dir / 'requests_per_second.png'}, {out_dir / 'results.json'}")
    check = verdicts["correctness"]
    for text in verdict_lines(verdicts["targets"], check):
        print(text)
    for offender in check["offenders"]:
        print(f"             {offender}")
    ok_cells = sum(1 for record in run["records"] if record.get("status") == "ok")
    return 0 if ok_cells else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
