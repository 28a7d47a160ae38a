"""``python -m tarantool_pool status`` run as a subprocess against the test cluster."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("TARANTOOL_POOL_")}
    environ["PYTHONPATH"] = str(ROOT)
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "tarantool_pool", *args], capture_output=True, text=True,
                          env=environ, cwd=ROOT, timeout=60)


def uri(cluster: Any, name: str, credentials: bool = True) -> str:
    inst = cluster.instances[name]
    prefix = f"{cluster.user}:{cluster.password}@" if credentials else ""
    return f"{prefix}{inst.host}:{inst.port}"


def rows(stdout: str) -> dict[str, list[str]]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines[0].split()[:3] == ["instance", "role", "status"]
    return {line.split()[0]: line.split() for line in lines[1:]}


def test_status_with_a_master_exits_0(cluster: Any) -> None:
    down = f"127.0.0.1:{free_port()}"
    result = run("status", *(uri(cluster, name) for name in ("inst1", "inst2", "inst3")), down)
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    inst1, inst2 = cluster.instances["inst1"], cluster.instances["inst2"]
    assert table[f"{inst1.host}:{inst1.port}"][1:3] == ["rw", "HEALTHY"]
    assert table[f"{inst2.host}:{inst2.port}"][1:3] == ["ro", "HEALTHY"]
    assert float(table[f"{inst1.host}:{inst1.port}"][3]) >= 0  # rtt ms
    assert table[down][1:3] == ["down", "UNHEALTHY"]
    assert "Connection refused" in result.stdout
    assert cluster.password not in result.stdout + result.stderr


def test_status_without_a_master_exits_1(cluster: Any) -> None:
    result = run("status", "--user", cluster.user, "--password", cluster.password,
                 uri(cluster, "inst2", False), uri(cluster, "inst3", False))
    assert result.returncode == 1, result.stderr
    assert {row[1] for row in rows(result.stdout).values()} == {"ro"}


def test_only_down_instances_exit_1() -> None:
    result = run("status", "--timeout", "0.5", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "down" in result.stdout


def test_credentials_and_addrs_from_the_environment(cluster: Any) -> None:
    env = {"TARANTOOL_POOL_ADDRS": ",".join(uri(cluster, name, False) for name in ("inst1", "inst2")),
           "TARANTOOL_POOL_USER": cluster.user, "TARANTOOL_POOL_PASSWORD": cluster.password}
    result = run("status", env=env)
    assert result.returncode == 0, result.stderr
    assert len(rows(result.stdout)) == 2


def test_bounded_watch_prints_count_tables(cluster: Any) -> None:
    result = run("status", "--watch", "0.2", "--count", "3", uri(cluster, "inst1"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("instance  ") == 3


def test_usage_errors_exit_2() -> None:
    for args in (["status"], ["status", "nohost"], ["status", "--count", "0", "a:1"], ["frobnicate"], []):
        result = run(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stderr
    result = run("status", "admin:hunter2@host:bad")
    assert result.returncode == 2 and "admin:***@host:bad" in result.stderr and "hunter2" not in result.stderr
    result = run("status", "a:1", env={"TARANTOOL_POOL_SOCKET_TIMEOUT": "soon"})
    assert result.returncode == 2 and "TARANTOOL_POOL_SOCKET_TIMEOUT" in result.stderr


def test_conflicting_credentials_exit_2(cluster: Any) -> None:
    result = run("status", "--user", "someone", uri(cluster, "inst1"))
    assert result.returncode == 2 and "conflicts" in result.stderr
