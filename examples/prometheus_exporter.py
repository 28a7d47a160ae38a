"""Serve a pool's metrics to Prometheus while a small load runs.

    pip install 'tarantool_pool[prometheus]'
    export TARANTOOL_POOL_ADDRS=127.0.0.1:3301,127.0.0.1:3302,127.0.0.1:3303
    export TARANTOOL_POOL_USER=test TARANTOOL_POOL_PASSWORD=...
    python examples/prometheus_exporter.py --port 8000 --seconds 60

or with URIs (credentials from the URIs or the variables above):

    python examples/prometheus_exporter.py test@127.0.0.1:3301 127.0.0.1:3302 127.0.0.1:3303

Then scrape the address it prints (``curl http://127.0.0.1:8000/metrics``).
The load is one ping in mode RW and one in PREFER_RO every ``--interval``
seconds.  Stops after ``--seconds``, or on Ctrl-C / SIGTERM, and prints how
many requests it made next to the pool's request counters (they agree when
each request reached an instance once: none retried, none without an instance).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from a checkout too

from prometheus_client import REGISTRY, generate_latest, start_http_server  # noqa: E402

from tarantool_pool import DatabaseError, Mode, pool_from_env, prometheus  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("uris", nargs="*", help="[user[:password]@]host:port ... (default: TARANTOOL_POOL_ADDRS)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port of /metrics (0: any free port)")
    parser.add_argument("--addr", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--name", default="default", help="the value of the metrics' pool label")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: run until Ctrl-C)")
    parser.add_argument("--interval", type=float, default=0.01, help="pause between two rounds of requests")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    overrides: dict[str, Any] = {"addrs": args.uris} if args.uris else {}
    pool = pool_from_env(**overrides)  # TARANTOOL_POOL_* variables; URIs given here win
    metrics = prometheus.register(pool, name=args.name)  # into prometheus_client.REGISTRY
    server, thread = start_http_server(args.port, addr=args.addr)
    print(f"serving the metrics of pool {args.name!r} ({pool.describe()}) at "
          f"http://{args.addr}:{server.server_port}/metrics", flush=True)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())  # finish the request in hand, then stop
    made = failed = 0
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            for mode in (Mode.RW, Mode.PREFER_RO):
                made += 1
                try:
                    pool.ping(mode=mode)
                except DatabaseError as error:  # no master, every instance down, ...: the metrics show it
                    failed += 1
                    print(f"{mode.name}: {type(error).__name__}: {error}", file=sys.stderr)
            stop.wait(args.interval)
    finally:
        print(f"made {made} requests, {failed} failed; the pool's request counters:")
        for line in generate_latest(REGISTRY).decode().splitlines():
            if line.startswith("tarantool_pool_requests_total{") and f'pool="{args.name}"' in line:
                print(line)
        metrics.unregister()
        pool.close()
        server.shutdown()
        server.server_close()
        thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
