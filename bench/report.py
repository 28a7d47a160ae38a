"""RESULTS.md and the chart, from the records of one run (``results.json``).

    bench/.venv/bin/python bench/report.py [DIR]   # re-render DIR/RESULTS.md and the PNG from DIR/results.json

The targets are judged here, from medians measured in the same run; a target
whose cells did not run says NOT MEASURED and why, never PASS.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from harness import CLIENTS, CLIENTS_BY_KEY, PLANS, WORKLOADS, is_number, summarize

CHART_NAME = "requests_per_second.png"
RESULTS_NAME = "RESULTS.md"
RAW_NAME = "results.json"

# The clients the targets compare (decided before any number was seen): the pool
# in its default read mode ANY against the peers.
OURS, PEER_POOL, PEER_ASYNC, PEER_BARE = "tp-pool", "tt-pool", "asynctnt", "tt-conn"
TARGET_WORKLOADS = ("select", "call")

Summary = dict[tuple[str, str, int], dict[str, Any]]


# -- formatting --------------------------------------------------------------------------

def _fmt(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _latency(us: Any) -> str:
    if us is None or (isinstance(us, float) and math.isnan(us)):
        return "–"
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def _cell_status(cell: dict[str, Any] | None) -> str | None:
    """None when the cell has figures; else the short text a table shows."""
    if cell is None:
        return "not run"
    if cell["status"] == "not available":
        return "not available"
    if cell["status"] != "ok":
        return "failed"
    return None


# -- targets -------------------------------------------------------------------------------

def _ratio(summary: Summary, figure: str, ours: str, peer: str, workload: str, concurrency: int
           ) -> tuple[float | None, str]:
    """(ours/peer, how it was got); None and the reason when a side has no figure."""
    mine = summary.get((ours, workload, concurrency))
    theirs = summary.get((peer, workload, concurrency))
    for key, cell in ((ours, mine), (peer, theirs)):
        status = _cell_status(cell)
        if status is not None:
            reason = f": {cell.get('reason')}" if cell and cell.get("reason") else ""
            return None, f"{CLIENTS_BY_KEY[key].label} {status}{reason}"
        if cell is not None and cell.get(figure) is None:
            return None, f"{CLIENTS_BY_KEY[key].label}: no {figure}"
    assert mine is not None and theirs is not None
    if not theirs[figure]:
        return None, f"{CLIENTS_BY_KEY[peer].label}: {figure} is 0"
    return mine[figure] / theirs[figure], f"{_fmt(mine[figure], 1)} / {_fmt(theirs[figure], 1)}"


def _verdict(ratio: float | None, bound: float, at_least: bool) -> str:
    if ratio is None:
        return "NOT MEASURED"
    return "PASS" if (ratio >= bound if at_least else ratio <= bound) else "FAIL"


def targets(summary: Summary, concurrencies: set[int]) -> list[dict[str, Any]]:
    """Every target line: what, measured ratio, bound, verdict."""
    lines: list[dict[str, Any]] = []

    def add(name: str, figure: str, peer: str, workload: str, concurrency: int, bound: float, at_least: bool
            ) -> None:
        if concurrency not in concurrencies:
            return
        ratio, basis = _ratio(summary, figure, OURS, peer, workload, concurrency)
        info, _ = _ratio(summary, figure, "tp-pool-ro", peer, workload, concurrency)
        aio, _ = _ratio(summary, figure, "tp-aio", peer, workload, concurrency)
        lines.append({"target": name, "workload": workload, "concurrency": concurrency, "ratio": ratio,
                      "basis": basis, "bound": f"{'≥' if at_least else '≤'} {bound:g}x",
                      "verdict": _verdict(ratio, bound, at_least), "prefer_ro_ratio": info, "aio_ratio": aio,
                      "aio_verdict": _verdict(aio, bound, at_least)})

    for workload in TARGET_WORKLOADS:
        for concurrency in (16, 64):
            add("requests/s vs tarantool-python ConnectionPool", "rps", PEER_POOL, workload, concurrency, 10, True)
        for concurrency in (16, 64):
            add("requests/s vs asynctnt", "rps", PEER_ASYNC, workload, concurrency, 1, True)
        add("client CPU per request vs asynctnt", "cpu_us_per_req", PEER_ASYNC, workload, 64, 1, False)
        add("p50 latency vs tarantool-python bare Connection", "p50_us", PEER_BARE, workload, 1, 1.15, False)
    return lines


def correctness(summary: Summary) -> dict[str, Any]:
    """Zero errors and zero mismatches in every cell of every tarantool_pool client."""
    offenders = []
    cells = 0
    for (key, workload, concurrency), cell in sorted(summary.items()):
        if not CLIENTS_BY_KEY[key].ours:
            continue
        cells += 1
        if cell["status"] != "ok" or cell.get("failed_rounds"):
            offenders.append(f"{key} {workload} c={concurrency}: {cell['status']} "
                             f"({cell.get('reason', 'a round failed')})")
        elif cell["errors"] or cell.get("mismatches"):
            offenders.append(f"{key} {workload} c={concurrency}: {cell['errors']} errors, "
                             f"{cell.get('mismatches') or 0} mismatches ({'; '.join(cell['error_samples'][:2])})")
    return {"cells": cells, "offenders": offenders,
            "verdict": "PASS" if cells and not offenders else ("NOT MEASURED" if not cells else "FAIL")}


# -- the chart -----------------------------------------------------------------------------

def chart(summary: Summary, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = [w for w in WORKLOADS if any(key[1] == w for key in summary)]
    columns = 2 if len(workloads) > 1 else 1
    rows = math.ceil(len(workloads) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.4 * columns, 4.6 * rows), squeeze=False)
    styles = {
        "tp-pool": ("tab:blue", "o", "-"), "tp-pool-ro": ("tab:cyan", "o", "--"),
        "tp-conn": ("tab:green", "s", "-"), "tp-aio": ("tab:olive", "*", "-"), "tt-pool": ("tab:red", "v", "-"),
        "tt-conn": ("tab:orange", "^", "-"), "asynctnt": ("tab:purple", "D", "-"),
        "netbox": ("black", "x", ":"), "floor": ("gray", "+", "-."),
    }
    handles: dict[str, Any] = {}
    for index, workload in enumerate(workloads):
        axis = axes[index // columns][index % columns]
        for client in CLIENTS:
            points = sorted((concurrency, cell["rps"]) for (key, w, concurrency), cell in summary.items()
                            if key == client.key and w == workload and cell["status"] == "ok" and cell.get("rps"))
            if not points:
                continue
            color, marker, line = styles.get(client.key, (None, "o", "-"))
            (handle,) = axis.plot([x for x, _ in points], [y for _, y in points], marker=marker, linestyle=line,
                                  color=color, label=client.label)
            handles.setdefault(client.key, handle)
        axis.set_title(workload)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        concurrencies = sorted({key[2] for key in summary if key[1] == workload})
        axis.set_xticks(concurrencies)
        axis.set_xticklabels([str(c) for c in concurrencies])
        axis.set_xlabel("concurrency (threads / tasks / fibers)")
        axis.set_ylabel("requests/s (median)")
        axis.grid(True, which="both", alpha=0.3)
    for index in range(len(workloads), rows * columns):
        axes[index // columns][index % columns].axis("off")
    ordered = [handles[client.key] for client in CLIENTS if client.key in handles]
    figure.legend(ordered, [handle.get_label() for handle in ordered], loc="lower center", ncol=2, fontsize=8.5,
                  frameon=False)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout(rect=(0, 0.05 + 0.025 * math.ceil(len(ordered) / 2), 1, 0.97))
    figure.savefig(path, dpi=110)
    plt.close(figure)


# -- RESULTS.md ------------------------------------------------------------------------------

def results_markdown(run: dict[str, Any], summary: Summary) -> str:
    plan = PLANS[run["plan"]]
    machine, versions = run["machine"], run["versions"]
    concurrencies = sorted({key[2] for key in summary})
    workloads = [w for w in WORKLOADS if any(key[1] == w for key in summary)]
    out: list[str] = []
    add = out.append
    add(f"# Benchmark results ({run['plan']} run)\n")
    add(f"Measured {run['started']} – {run['finished']} by `{run['command']}`. "
        f"{plan.rounds} round(s); every cell a fresh process, {plan.warmup:g} s warm-up then a "
        f"{plan.duration:g} s window; clients interleaved within each (workload, concurrency); "
        "figures are medians over the rounds, errors and mismatches are sums over every round.\n")
    if run["plan"] != "full":
        add("**This is a quick run** (fewer cells, one short round): for a smoke check, not for quoting. "
            "`make bench` gives the full run.\n")

    add("## Machine and versions\n")
    add("| | |\n|---|---|")
    add(f"| CPUs (nproc) | {machine['nproc']} |")
    add(f"| CPU model | {machine['cpu_model']} |")
    add(f"| memory | {machine['memory']} |")
    add(f"| OS / kernel | {machine['os']} |")
    add(f"| load average before / after the run | {machine['load_before']} / {machine.get('load_after', '?')} |")
    loads = sorted(record["load_before"] for record in run["records"] if is_number(record.get("load_before")))
    if loads:
        add(f"| 1-minute load average at the cells' starts | median {loads[len(loads) // 2]:.2f}, "
            f"highest {loads[-1]:.2f} (the client, the 3 instances, and anything else on the machine) |")
    add(f"| Python (every Python client) | {machine['python']} |")
    add(f"| tarantool (server and net.box client) | {versions['tarantool_server']} |")
    add(f"| tarantool_pool | {versions.get('tarantool_pool') or 'not importable'} (this tree: {versions['git']}) |")
    add(f"| tarantool-python (`tarantool` on PyPI) | {versions.get('tarantool') or 'not importable'} |")
    add(f"| asynctnt | {versions.get('asynctnt') or 'not importable'} (default asyncio loop, no uvloop) |")
    add(f"| msgpack | {versions.get('msgpack') or '?'} |")
    add(f"| matplotlib (chart only) | {versions.get('matplotlib') or 'not importable'} |")
    add("")
    add("Server, replicas and clients share these cores: the 3 tarantool instances of "
        "`test-cluster/` (inst1 master, inst2/inst3 replicas, full-mesh replication) run beside the "
        "client process. Requests/s is bounded by that, and compared only within this run.\n")

    add("## Commands\n")
    add("```sh")
    add(f"{run['command']:<32}# {'full' if run['plan'] == 'full' else 'quick'} run: "
        "bench venv, cluster up, every cell, report, cluster down")
    add("bench/.venv/bin/python bench/run.py " + ("" if run["plan"] == "full" else "--quick ")
        + "# what the target runs (re-executed inside bench/.venv)")
    add("# each Python cell, in a fresh process:")
    add(f"bench/.venv/bin/python bench/cell.py '{json.dumps(run['example_spec'], separators=(',', ':'))}'")
    add("# each net.box cell:")
    add(f"tarantool bench/netbox_client.lua '{json.dumps(run['example_netbox_spec'], separators=(',', ':'))}'")
    add("```\n")
    add("Workloads: `ping`; `select` of one random primary key of the 10,000 rows prefilled in `test_int`; "
        "`replace` of a small tuple `[id, 'bench', n]` (ids 1,000,000+, away from the rows select reads); "
        "`call` of the Lua function `echo(worker, seq)`. Pools read (ping, select, call) in mode ANY (and, "
        "for tarantool_pool, also PREFER_RO) and write in RW. A reply counts as a *mismatch* when it is not "
        "the caller's own: `echo` must return the caller's (worker, seq), `select` the asked key, `replace` "
        "the written id and value (`ping` carries nothing to check: –).\n")
    add("Figures: **req/s** completed in the window; **p50/p99** latency of those requests; **CPU/req**: "
        "client process CPU time (`getrusage(RUSAGE_SELF)`, every thread; `clock.proc()` for net.box) in the "
        "window divided by its requests, the steadiest figure on a noisy machine; **user + sys**: the same split "
        "into user and kernel time; **switches/req**: the process's context switches (voluntary and "
        "involuntary, every thread) per request (not measured for net.box).\n")
    add("The last line, *thread hand-off floor*, is no Tarantool client: N caller threads hand each request "
        "to one thread that wakes them with the reply, with no server, socket or codec (`thread-floor` in "
        "`cell.py`). It is the skeleton of a client with one blocked thread per request whose replies another "
        "thread reads (a reader thread, or tarantool_pool's leader/follower under load, where the caller "
        "reading for the others wakes each of them): its CPU per request is what one thread wake-up per "
        "request costs in this Python on this machine, a floor under such a client's CPU per request and a "
        "ceiling over its requests/s.\n")

    add("## Targets\n")
    add("Ratios of medians from this run, tarantool_pool `ConnectionPool` reading in mode ANY (the default "
        "read mode, N threads) against each peer; *verdict* is that pool's.  Beside it: the same ratio for "
        "the pool reading PREFER_RO (for information), and for the pool's asyncio face "
        "`tarantool_pool.aio.ConnectionPool` (reads ANY, N tasks on one loop: the *tasks* of the targets' "
        "\"threads (or tasks)\") with its own verdict against the same bound.\n")
    add("| target | workload | concurrency | measured | ratio | bound | verdict | (PREFER_RO) | aio | aio verdict |")
    add("|---|---|---|---|---|---|---|---|---|---|")
    target_lines = targets(summary, set(concurrencies))
    for line in target_lines:
        ratio = "–" if line["ratio"] is None else f"{line['ratio']:.2f}x"
        info = "–" if line["prefer_ro_ratio"] is None else f"{line['prefer_ro_ratio']:.2f}x"
        aio = "–" if line["aio_ratio"] is None else f"{line['aio_ratio']:.2f}x"
        add(f"| {line['target']} | {line['workload']} | {line['concurrency']} | {line['basis']} | {ratio} | "
            f"{line['bound']} | **{line['verdict']}** | {info} | {aio} | {line['aio_verdict']} |")
    check = correctness(summary)
    add("")
    add("Verdict lines:\n")
    add("```")
    for text in verdict_lines(target_lines, check):
        add(text)
    add("```")
    for offender in check["offenders"]:
        add(f"- {offender}")
    add("")

    add("## Requests/s (median)\n")
    add(f"![requests/s against concurrency]({CHART_NAME})\n")
    for workload in workloads:
        add(f"**{workload}**\n")
        add("| client | " + " | ".join(f"c={c}" for c in concurrencies) + " |")
        add("|---|" + "---:|" * len(concurrencies))
        for client in CLIENTS:
            row = []
            seen = False
            for concurrency in concurrencies:
                cell = summary.get((client.key, workload, concurrency))
                status = _cell_status(cell)
                seen = seen or cell is not None
                row.append(status if status and cell is not None else ("" if cell is None else _fmt(cell["rps"])))
            if seen:
                add(f"| {client.label} | " + " | ".join(row) + " |")
        add("")

    add("## Every cell\n")
    add("Medians over the rounds (req/s with the rounds' lowest–highest beneath); errors and mismatches "
        "summed over the rounds.\n")
    for workload in workloads:
        add(f"### {workload}\n")
        add("| client | c | req/s | p50 | p99 | CPU/req | user + sys | switches/req | errors | mismatches |")
        add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for client in CLIENTS:
            for concurrency in concurrencies:
                cell = summary.get((client.key, workload, concurrency))
                if cell is None:
                    continue
                status = _cell_status(cell)
                if status:
                    add(f"| {client.label} | {concurrency} | {status} | | | | | | | |")
                    continue
                mismatches = "–" if cell.get("mismatches") is None else _fmt(cell["mismatches"])
                split = ("–" if cell.get("user_us_per_req") is None
                         else f"{_fmt(cell['user_us_per_req'], 1)} + {_fmt(cell['sys_us_per_req'], 1)}")
                partial = f" ({cell['ok_rounds']}/{cell['rounds']} rounds)" if cell.get("failed_rounds") else ""
                if cell["ok_rounds"] > 1 and cell.get("rps_min") is not None:
                    partial += f" <sub>{_fmt(cell['rps_min'])}–{_fmt(cell['rps_max'])}</sub>"
                add(f"| {client.label} | {concurrency} | {_fmt(cell['rps'])}{partial} | {_latency(cell['p50_us'])} | "
                    f"{_latency(cell['p99_us'])} | {_fmt(cell['cpu_us_per_req'], 1)} µs | {split} | "
                    f"{_fmt(cell.get('switches_per_req'), 2)} | {_fmt(cell['errors'])} | {mismatches} |")
        add("")

    problems = [(key, cell) for key, cell in sorted(summary.items())
                if cell["status"] != "ok" or cell.get("failed_rounds") or cell.get("error_samples")]
    if problems:
        add("## Cells that failed, were not available, or had errors\n")
        seen_reasons: set[str] = set()
        for (key, workload, concurrency), cell in problems:
            reason = cell.get("reason") or "; ".join(cell.get("error_samples", []))
            text = f"{CLIENTS_BY_KEY[key].label}: {cell['status']}: {reason}"
            if cell["status"] == "not available":
                if text in seen_reasons:
                    continue
                seen_reasons.add(text)
                add(f"- {text} (every cell of this client)")
            else:
                add(f"- {CLIENTS_BY_KEY[key].label}, {workload}, c={concurrency}: {cell['status']}"
                    f"{', ' + str(cell.get('failed_rounds')) + ' failed round(s)' if cell.get('failed_rounds') else ''}"
                    f": {reason}")
        add("")
    add("Raw per-round records: `results.json` next to this file.\n")
    return "\n".join(out)


def verdict_lines(target_lines: list[dict[str, Any]], check: dict[str, Any]) -> list[str]:
    """One line per target (the threaded pool's, then the asyncio face's), then correctness."""
    lines = []
    for ratio_key, verdict_key, who in (("ratio", "verdict", ""),
                                        ("aio_ratio", "aio_verdict", "aio.ConnectionPool (tasks): ")):
        for line in target_lines:
            ratio = "not measured" if line[ratio_key] is None else f"{line[ratio_key]:.2f}x"
            lines.append(f"{line[verdict_key]:12s} {who}{line['target']}, {line['workload']}, "
                         f"c={line['concurrency']}: {ratio} (target {line['bound']})")
    offenders = f", offenders: {len(check['offenders'])}" if check["offenders"] else ""
    lines.append(f"{check['verdict']:12s} zero errors and mismatches in every tarantool_pool cell "
                 f"({check['cells']} cells{offenders})")
    return lines


def write_report(run: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """results.json, RESULTS.md and the chart into ``out_dir``; the verdicts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RAW_NAME).write_text(json.dumps(run, indent=1) + "\n")
    summary = summarize(run["records"])
    (out_dir / RESULTS_NAME).write_text(results_markdown(run, summary) + "\n")
    try:
        chart(summary, out_dir / CHART_NAME,
              f"Requests/s against concurrency ({run['plan']} run, {run['machine']['nproc']} CPUs shared with "
              f"3 tarantool instances)")
    except ImportError as exc:  # matplotlib is a bench-only dependency
        print(f"no chart: {exc}", file=sys.stderr)
    concurrencies = {key[2] for key in summary}
    return {"targets": targets(summary, concurrencies), "correctness": correctness(summary)}


def main(argv: list[str]) -> int:
    out_dir = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent
    run = json.loads((out_dir / RAW_NAME).read_text())
    write_report(run, out_dir)
    print(f"wrote {out_dir / RESULTS_NAME} and {out_dir / CHART_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
