"""TLS (``transport='ssl'``) against the real replica set, through stunnel.

Tarantool Community Edition has no TLS, so every test here talks TLS to a
stunnel (see ``tls_helpers``) that forwards plain iproto to an instance of
the test cluster.  Certificates are made per module with ``openssl``: our CA,
a server and a client certificate signed by it, the client key encrypted with
a password, and an unrelated CA.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pty
import random
import re
import select
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tls_helpers import (  # noqa: F401 - stunnel and tls_files are fixtures
    HOST,
    Stunnel,
    StunnelFactory,
    TlsFiles,
    stunnel,
    tls_files,
)

from tarantool_pool import Connection, ConnectionPool, Mode, Status, aio
from tarantool_pool.errors import NetworkError, SslError

pytestmark = pytest.mark.usefixtures("no_leaked_readers")

REPO_ROOT = Path(__file__).resolve().parent.parent
# How long a refused TLS connection may take to fail: far below any timeout involved.
QUICK_FAILURE_SECONDS = 3.0

# test_int primary keys private to this module (other modules use other ranges).
_keys = itertools.count(random.SystemRandom().randrange(7 * 10**12, 8 * 10**12, 10**7))


def new_key() -> int:
    return next(_keys)


def tls_connect(cluster: Any, tunnel: Stunnel, **kwargs: Any) -> Connection:
    """A Connection with transport='ssl' to ``tunnel``, authenticated as the test user."""
    kwargs.setdefault("user", cluster.user)
    kwargs.setdefault("password", cluster.password)
    kwargs.setdefault("connection_timeout", 5)
    return Connection(tunnel.host, tunnel.port, transport="ssl", **kwargs)


@pytest.fixture
def inst1_tunnel(cluster: Any, stunnel: StunnelFactory) -> Stunnel:  # noqa: F811 - the fixture
    """TLS in front of inst1 (the master); clients need no certificate."""
    return stunnel(cluster.instances["inst1"].port)


@pytest.fixture
def inst1_mtls_tunnel(cluster: Any, stunnel: StunnelFactory) -> Stunnel:  # noqa: F811 - the fixture
    """TLS in front of inst1 that requires a client certificate signed by our CA."""
    return stunnel(cluster.instances["inst1"].port, require_client_cert=True)


@pytest.fixture
def test_keys(cluster: Any) -> Iterator[list[int]]:
    """Keys of test_int this test may write; deleted on inst1 afterwards."""
    keys: list[int] = []
    yield keys
    if keys:
        cluster.admin("inst1", f"for _, k in ipairs({{{', '.join(map(str, keys))}}}) do "
                               "box.space.test_int:delete{k} end")


def assert_tls_message(error: BaseException) -> None:
    message = str(error)
    assert re.search(r"TLS|SSL|handshake|certificate", message, re.IGNORECASE), (
        f"the error does not say that TLS failed: {type(error).__name__}: {message}")


# -- server verification and requests ------------------------------------------------


@pytest.mark.timeout(30)
def test_ssl_connection_verifying_the_server_against_our_ca_pings_selects_and_calls(
        cluster: Any, inst1_tunnel: Stunnel, tls_files: TlsFiles, test_keys: list[int]) -> None:  # noqa: F811
    key = new_key()
    test_keys.append(key)
    cluster.admin("inst1", f"box.space.test_int:insert{{{key}, 'over tls', {{1, 2, 3}}}}")
    conn = tls_connect(cluster, inst1_tunnel, ssl_ca_file=tls_files.ca_cert)
    try:
        sock = conn._link.sock  # type: ignore[union-attr]
        assert isinstance(sock, ssl.SSLSocket)
        peer_cert = sock.getpeercert()
        assert peer_cert is not None and peer_cert["subject"] == ((("commonName", HOST),),)
        assert isinstance(conn.ping(), float)
        assert list(conn.select("test_int", key)) == [[key, "over tls", [1, 2, 3]]]
        assert list(conn.call("echo", "x" * 100_000, key)) == ["x" * 100_000, key]
        assert conn.call("whoami")[0]["name"] == "inst1"
    finally:
        conn.close()
    assert "accepted connection from" in inst1_tunnel.log()


@pytest.mark.timeout(60)
def test_threads_sharing_a_tls_connection_each_get_their_own_replies(
        cluster: Any, inst1_tunnel: Stunnel, tls_files: TlsFiles) -> None:  # noqa: F811
    threads_count, calls = 8, 200
    conn = tls_connect(cluster, inst1_tunnel, ssl_ca_file=tls_files.ca_cert)
    mismatches: list[tuple[int, int, Any]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(threads_count)

    def work(t: int) -> None:
        try:
            start.wait(timeout=10)
            for i in range(calls):
                reply = list(conn.call("echo", t, i))
                if reply != [t, i]:
                    mismatches.append((t, i, reply))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads_count)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=45)
        assert not [w.name for w in workers if w.is_alive()], "workers still running"
    finally:
        conn.close()
    assert not errors, f"{len(errors)} threads failed, first: {errors[0]!r}"
    assert not mismatches, f"{len(mismatches)} replies reached the wrong caller, e.g. {mismatches[:3]}"


@pytest.mark.timeout(60)
def test_threads_sending_large_requests_over_tls_do_not_stall(
        cluster: Any, inst1_tunnel: Stunnel, tls_files: TlsFiles) -> None:  # noqa: F811
    """Writers and the reader share one TLS object: big writes and big replies interleave."""
    threads_count, calls, size = 6, 8, 3 * 1024 * 1024
    conn = tls_connect(cluster, inst1_tunnel, ssl_ca_file=tls_files.ca_cert, socket_timeout=20)
    errors: list[BaseException] = []
    wrong: list[tuple[int, int]] = []

    def work(t: int) -> None:
        try:
            for i in range(calls):
                payload = f"{t}:{i}:" + chr(65 + t) * size
                reply = conn.call("echo", payload)
                if reply[0] != payload:
                    wrong.append((t, i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads_count)]
    started = time.monotonic()
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=50)
        assert not [w.name for w in workers if w.is_alive()], "workers still running"
    finally:
        conn.close()
    assert not errors, f"{len(errors)} threads failed, first: {errors[0]!r}"
    assert not wrong, f"wrong replies: {wrong[:5]}"
    elapsed = time.monotonic() - started
    assert elapsed < 15, f"{threads_count * calls} echo calls of {size} bytes took {elapsed:.1f} s"


# -- client certificates ------------------------------------------------------------


@pytest.mark.timeout(30)
def test_server_requiring_a_client_certificate_refuses_a_client_without_one_with_a_tls_error(
        cluster: Any, inst1_mtls_tunnel: Stunnel, tls_files: TlsFiles) -> None:  # noqa: F811
    started = time.monotonic()
    with pytest.raises((SslError, NetworkError)) as caught:
        tls_connect(cluster, inst1_mtls_tunnel, ssl_ca_file=tls_files.ca_cert, connection_timeout=10)
    elapsed = time.monotonic() - started
    assert_tls_message(caught.value)
    assert elapsed < QUICK_FAILURE_SECONDS, f"refusal took {elapsed:.1f} s"


@pytest.mark.timeout(30)
def test_server_requiring_a_client_certificate_accepts_our_client_cert_and_key(
        cluster: Any, inst1_mtls_tunnel: Stunnel, tls_files: TlsFiles) -> None:  # noqa: F811
    conn = tls_connect(cluster, inst1_mtls_tunnel, ssl_ca_file=tls_files.ca_cert,
                       ssl_cert_file=tls_files.client_cert, ssl_key_file=tls_files.client_key)
    try:
        assert isinstance(conn.ping(), float)
        assert list(conn.call("echo", "mtls", 1)) == ["mtls", 1]
    finally:
        conn.close()


def test_awaited_requests_open_their_loops_own_tls_connection_with_the_same_client_certificate(
        cluster: Any, inst1_mtls_tunnel: Stunnel, tls_files: TlsFiles) -> None:  # noqa: F811
    conn = tls_connect(cluster, inst1_mtls_tunnel, ssl_ca_file=tls_files.ca_cert,
                       ssl_cert_file=tls_files.client_cert, ssl_key_file=tls_files.client_key_encrypted,
                       ssl_password=tls_files.client_key_password)
    aconn = aio.Connection.from_sync(conn)

    async def scenario() -> tuple[list[Any], set[int]]:
        echoed = list(await aconn.call("echo", "awaited over mtls", 3))
        sessions = await asyncio.gather(*(aconn.eval("return box.session.id()") for _ in range(20)))
        return echoed, {int(result.data[0]) for result in sessions}

    try:
        echoed, sessions = asyncio.run(scenario())
        assert echoed == ["awaited over mtls", 3]
        # The loop's own connection (one for all 20), not the sync link: mutual TLS, same certificate.
        assert len(sessions) == 1 and sessions != {int(conn.eval("return box.session.id()").data[0])}
    finally:
        conn.close()


@pytest.mark.timeout(30)
def test_encrypted_client_key_loads_with_ssl_password(
        cluster: Any, inst1_mtls_tunnel: Stunnel, tls_files: TlsFiles) -> None:  # noqa: F811
    conn = tls_connect(cluster, inst1_mtls_tunnel, ssl_ca_file=tls_files.ca_cert,
                       ssl_cert_file=tls_files.client_cert, ssl_key_file=tls_files.client_key_encrypted,
                       ssl_password=tls_files.client_key_password)
    try:
        assert list(conn.call("echo", "encrypted key", 2)) == ["encrypted key", 2]
    finally:
        conn.close()


@pytest.mark.timeout(30)
def test_encrypted_client_key_loads_with_the_right_line_of_ssl_password_file(
        cluster: Any, inst1_mtls_tunnel: Stunnel, tls_files: TlsFiles, tmp_path: Path) -> None:  # noqa: F811
    password_file = tmp_path / "passwords.txt"
    password_file.write_text(f"not the password\n{tls_files.client_key_password}\n", encoding="utf-8")
    conn = tls_connect(cluster, inst1_mtls_tunnel, ssl_ca_file=tls_files.ca_cert,
                       ssl_cert_file=tls_files.client_cert, ssl_key_file=tls_files.client_key_encrypted,
                       ssl_password_file=str(password_file))
    try:
        assert list(conn.call("echo", "password file", 3)) == ["password file", 3]
    finally:
        conn.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("source", ["ssl_password", "ssl_password_file"])
def test_encrypted_client_key_with_a_wrong_password_raises_ssl_error_that_the_key_cannot_be_loaded(
        cluster: Any, inst1_mtls_tunnel: Stunnel, tls_files: TlsFiles, tmp_path: Path,  # noqa: F811
        source: str) -> None:
    options: dict[str, str] = {}
    if source == "ssl_password":
        options["ssl_password"] = "not the password"
    else:
        password_file = tmp_path / "passwords.txt"
        password_file.write_text("not the password\nnor this one\n", encoding="utf-8")
        options["ssl_password_file"] = str(password_file)
    with pytest.raises(SslError, match=r"(?i)cannot load the client certificate/key.*password") as caught:
        tls_connect(cluster, inst1_mtls_tunnel, ssl_ca_file=tls_files.ca_cert,
                    ssl_cert_file=tls_files.client_cert, ssl_key_file=tls_files.client_key_encrypted,
                    **options)
    assert tls_files.client_key_password not in str(caught.value)


_NO_PASSWORD_CHILD = """
import sys
from tarantool_pool import Connection
try:
    Connection(sys.argv[1], int(sys.argv[2]), transport="ssl", ssl_ca_file=sys.argv[3],
               ssl_cert_file=sys.argv[4], ssl_key_file=sys.argv[5], connection_timeout=5)
    print("RESULT connected")
except Exception as exc:
    print("RESULT", type(exc).__name__, exc)
"""


@pytest.mark.timeout(30)
def test_encrypted_client_key_without_a_password_fails_instead_of_prompting_on_the_terminal(
        inst1_mtls_tunnel: Stunnel, tls_files: TlsFiles) -> None:  # noqa: F811
    """OpenSSL asks for a missing key password on the controlling terminal: it must not get to."""
    argv = [sys.executable, "-c", _NO_PASSWORD_CHILD, inst1_mtls_tunnel.host, str(inst1_mtls_tunnel.port),
            tls_files.ca_cert, tls_files.client_cert, tls_files.client_key_encrypted]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                                   os.environ.get("PYTHONPATH")])))
    pid, terminal = pty.fork()  # the child gets the pty as its controlling terminal
    if pid == 0:
        try:
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    output = b""
    try:
        deadline = time.monotonic() + 15
        while b"RESULT" not in output or not output.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            readable, _, _ = select.select([terminal], [], [], min(left, 0.5))
            if readable:
                try:
                    chunk = os.read(terminal, 4096)
                except OSError:  # EIO: the child closed the terminal (exited)
                    break
                if not chunk:
                    break
                output += chunk
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        os.close(terminal)
    text = output.decode(errors="replace")
    assert "pass phrase" not in text.lower(), f"the child was asked for the key password: {text!r}"
    assert re.search(r"RESULT SslError .*encrypted.*password", text), text


# -- server verification failures ---------------------------------------------------


@pytest.mark.timeout(30)
def test_server_certificate_from_another_ca_is_refused_quickly_with_ssl_error(
        cluster: Any, inst1_tunnel: Stunnel, tls_files: TlsFiles) -> None:  # noqa: F811
    started = time.monotonic()
    with pytest.raises(SslError, match=r"(?i)certificate verify failed") as caught:
        tls_connect(cluster, inst1_tunnel, ssl_ca_file=tls_files.other_ca_cert, connection_timeout=10)
    elapsed = time.monotonic() - started
    assert elapsed < QUICK_FAILURE_SECONDS, f"refusal took {elapsed:.1f} s: {caught.value}"


# -- pool ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_pool_sends_rw_writes_over_tls_to_the_master_with_plain_replicas(
        cluster: Any, inst1_tunnel: Stunnel, tls_files: TlsFiles, test_keys: list[int]) -> None:  # noqa: F811
    tls_addr = {"host": inst1_tunnel.host, "port": inst1_tunnel.port, "transport": "ssl",
                "ssl_ca_file": tls_files.ca_cert}
    addrs = [tls_addr, cluster.instances["inst2"].addr, cluster.instances["inst3"].addr]
    pool = ConnectionPool(addrs, user=cluster.user, password=cluster.password, refresh_delay=0.2)
    try:
        tls_unit = pool.pool[f"{inst1_tunnel.host}:{inst1_tunnel.port}"]
        assert tls_unit.conn.transport == "ssl"
        states = {name: (unit.state.status, unit.last_error) for name, unit in pool.pool.items()}
        assert all(status is Status.HEALTHY for status, _ in states.values()), states
        assert tls_unit.state.read_only is False  # the master is reached through stunnel only
        # The plain entries stay plain: the replicas answer read-only requests.
        assert {pool.call("whoami", mode=Mode.RO)[0]["name"] for _ in range(4)} <= {"inst2", "inst3"}
        for _ in range(10):
            key = new_key()
            test_keys.append(key)
            assert list(pool.insert("test_int", [key, "pool over tls", None])) == [[key, "pool over tls", None]]
        # The master saw the writes come from stunnel, i.e. over the TLS link.
        peer = pool.eval("return box.session.peer(), box.info.ro, box.info.id", mode=Mode.RW)
        assert peer[1] is False
        assert peer[2] == cluster.admin("inst1", "box.info.id")
        assert isinstance(tls_unit.conn._link.sock, ssl.SSLSocket)  # type: ignore[union-attr]
        client_side = tls_unit.conn._link.sock.getsockname()  # type: ignore[union-attr]
    finally:
        pool.close()
    keys = ", ".join(map(str, test_keys))
    stored = cluster.admin("inst1", f"local n = 0 for _, k in ipairs({{{keys}}}) do "
                                    "if box.space.test_int:get{k} ~= nil then n = n + 1 end end return n")
    assert stored == len(test_keys)
    log = inst1_tunnel.log()
    assert f"accepted connection from {client_side[0]}:{client_side[1]}" in log, log
    assert f"connected remote server from {peer[0]}" in log, log


@pytest.mark.timeout(60)
def test_pool_applies_tls_options_per_address_so_a_wrong_ca_keeps_only_that_instance_out(
        cluster: Any, inst1_tunnel: Stunnel, tls_files: TlsFiles) -> None:  # noqa: F811
    tls_addr = {"host": inst1_tunnel.host, "port": inst1_tunnel.port, "transport": "ssl",
                "ssl_ca_file": tls_files.other_ca_cert}
    addrs = [tls_addr, cluster.instances["inst2"].addr, cluster.instances["inst3"].addr]
    pool = ConnectionPool(addrs, user=cluster.user, password=cluster.password, refresh_delay=0.2,
                          connection_timeout=5)
    try:
        tls_unit = pool.pool[f"{inst1_tunnel.host}:{inst1_tunnel.port}"]
        assert tls_unit.state.status is Status.UNHEALTHY
        assert tls_unit.last_error is not None and "certificate verify failed" in tls_unit.last_error, (
            tls_unit.last_error)
        for name, unit in pool.pool.items():
            if unit is not tls_unit:
                assert unit.state.status is Status.HEALTHY, (name, unit.last_error)
        assert pool.call("whoami", mode=Mode.RO)[0]["name"] in {"inst2", "inst3"}
    finally:
        pool.close()
