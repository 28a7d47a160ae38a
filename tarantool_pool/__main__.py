"""``python -m tarantool_pool status URI...``: the replica set as the pool sees it.

Prints one row per instance: role (rw/ro/down), status, round trip of the
state refresh (ms), replication lag behind the master (s) and the last error.
Exit code: 0 when a master (rw) is present, 1 when not, 2 on usage or
configuration errors.  Credentials: from the URIs, else ``--user`` /
``--password``, else TARANTOOL_POOL_USER / TARANTOOL_POOL_PASSWORD; with no
URI, TARANTOOL_POOL_ADDRS.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any, Sequence, TextIO

from .errors import ConfigurationError
from .pool import ConnectionPool
from .uri import ENV_PREFIX, URI_FORMS, options_from_env

EXIT_OK, EXIT_NO_MASTER, EXIT_USAGE = 0, 1, 2
DEFAULT_WATCH_SECONDS = 2.0
COLUMNS = ("instance", "role", "status", "rtt ms", "lag s", "last error")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _positive_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tarantool_pool",
                                     description="Tools over a Tarantool replica set.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    status = commands.add_parser(
        "status", help="show each instance's role, health, round trip and lag",
        description="Connect a pool to the URIs and print each instance's role, status, round trip and "
                    "replication lag.  Exit code 0 when a master is present, 1 when not, 2 on usage errors.",
        epilog=f"URI: {URI_FORMS}.  Without URIs, {ENV_PREFIX}ADDRS (comma-separated) is used.")
    status.add_argument("uris", nargs="*", metavar="URI", help="an instance of the replica set")
    status.add_argument("--user", help=f"user name (default: from the URIs, or {ENV_PREFIX}USER)")
    status.add_argument("--password", help=f"password (default: from the URIs, or {ENV_PREFIX}PASSWORD)")
    status.add_argument("--timeout", type=_positive_seconds, default=2.0,
                        help="seconds to wait for each instance's first connect and refresh (default 2)")
    status.add_argument("--watch", nargs="?", type=_positive_seconds, const=DEFAULT_WATCH_SECONDS,
                        metavar="SECONDS",
                        help=f"print again every SECONDS (default {DEFAULT_WATCH_SECONDS:g}) until Ctrl-C")
    status.add_argument("--count", type=_positive_count, metavar="N",
                        help="stop after N tables (implies --watch)")
    status.add_argument("-v", "--verbose", action="store_true", help="log the pool's warnings to stderr")
    return parser


def _cell(value: Any, scale: float = 1.0, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value * scale:.{digits}f}"
    text = str(value)
    return text.replace("\n", " ")


def format_table(stats: dict[str, Any]) -> str:
    """The table of ``pool.get_stats()``: one row per instance."""
    rows = [COLUMNS]
    for name, info in stats["instances"].items():
        error = info.get("last_error")
        rows.append((name, info["role"], info["status"], _cell(info.get("rtt"), 1000.0),
                     _cell(info.get("lag"), 1.0, 3), _cell(error)[:120] if error else "-"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(COLUMNS) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1] for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def has_master(stats: dict[str, Any]) -> bool:
    return any(info["role"] == "rw" for info in stats["instances"].values())


def _options(args: argparse.Namespace, environ: dict[str, str]) -> dict[str, Any]:
    options = options_from_env(environ)
    if args.uris:
        options["addrs"] = list(args.uris)
    if "addrs" not in options:
        raise ConfigurationError(f"give at least one URI ({URI_FORMS}) or set {ENV_PREFIX}ADDRS")
    # The environment's credentials yield to credentials in the URIs; --user/--password must agree
    # with the URIs' (the pool's rule: one set of credentials, a conflict is an error).
    if any("@" in uri for uri in options["addrs"]):
        options.pop("user", None)
        options.pop("password", None)
    if args.user is not None:
        options["user"] = args.user
    if args.password is not None:
        options["password"] = args.password
    options["connection_timeout"] = args.timeout
    options["refresh_timeout"] = min(args.timeout, options.get("refresh_timeout", args.timeout))
    options.setdefault("refresh_delay", min(args.watch or 1.0, 1.0))
    return options


def status(args: argparse.Namespace, out: TextIO, environ: dict[str, str]) -> int:
    pool = ConnectionPool(**_options(args, environ))
    count = args.count if args.count is not None else (None if args.watch is not None else 1)
    interval = args.watch if args.watch is not None else DEFAULT_WATCH_SECONDS
    code = EXIT_NO_MASTER
    shown = 0
    try:
        while True:
            stats = pool.get_stats()
            code = EXIT_OK if has_master(stats) else EXIT_NO_MASTER
            if count != 1:
                out.write(time.strftime("%H:%M:%S") + ("" if code == EXIT_OK else "  no master") + "\n")
            out.write(format_table(stats) + "\n")
            out.flush()
            shown += 1
            if count is not None and shown >= count:
                break
            time.sleep(interval)
            out.write("\n")
    except KeyboardInterrupt:
        pass
    finally:
        pool.close()
    return code


def main(argv: Sequence[str] | None = None, out: TextIO | None = None,
         environ: dict[str, str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with 2 on a usage error
    logger = logging.getLogger("tarantool_pool")
    propagate = logger.propagate
    quiet = logging.NullHandler()
    if not args.verbose:  # quiet by default: the table shows each instance's last error
        logger.propagate = False
        logger.addHandler(quiet)
    try:
        return status(args, out or sys.stdout, dict(os.environ) if environ is None else environ)
    except ConfigurationError as error:
        parser.exit(EXIT_USAGE, f"{parser.prog} {args.command}: error: {error}\n")
    finally:
        logger.removeHandler(quiet)
        logger.propagate = propagate
    return EXIT_USAGE  # pragma: no cover - parser.exit() raises SystemExit


if __name__ == "__main__":
    sys.exit(main())
