"""tarantool_pool.Connection when the server fails: killed, frozen, not there.

Tests that break an instance use ``fresh_cluster``, which restores the
replica set before and after.  Every wait is bounded: a caller that hangs
fails the test instead of the run.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from typing import Any

import pytest
from support import connect

from tarantool_pool import (
    Connection,
    ConnectionClosedError,
    NetworkError,
    RequestTimeoutError,
)

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow, pytest.mark.usefixtures("no_leaked_readers")]


def closed_port() -> int:
    """A local port nobody listens on (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def requests_received(cluster: Any, name: str) -> int:
    """IPROTO requests the instance has read off the network so far (never decreases)."""
    return int(cluster.admin(name, "box.stat.net().REQUESTS.total"))


# -- the server dies -----------------------------------------------------------------------

def test_killed_server_fails_every_in_flight_caller_promptly_then_reconnects(fresh_cluster: Any) -> None:
    cluster = fresh_cluster
    inst = cluster.instances["inst1"]
    lost: list[BaseException] = []
    lost_event = threading.Event()

    def on_disconnect(reason: BaseException) -> None:
        lost.append(reason)
        lost_event.set()

    conn = connect(cluster, on_disconnect=on_disconnect)
    try:
        assert conn.select("test_int", 0).data is not None  # connected, schema loaded
        received = requests_received(cluster, "inst1")
        outcomes: dict[int, tuple[BaseException | None, float]] = {}

        def waiter(tid: int) -> None:
            error: BaseException | None = None
            try:
                conn.call("sleep", 5)  # the default deadline: 10 s
            except BaseException as exc:  # recorded, checked below
                error = exc
            outcomes[tid] = (error, time.monotonic())

        threads = [threading.Thread(target=waiter, args=(tid,), name=f"sleeper-{tid}") for tid in range(8)]
        for thread in threads:
            thread.start()
        # All eight calls are in the server's hands before it dies.
        cluster.wait_until("inst1", f"box.stat.net().REQUESTS.total >= {received + 8}", timeout=10)
        killed_at = time.monotonic()
        cluster.kill("inst1")
        for thread in threads:
            thread.join(timeout=12)
        assert not any(t.is_alive() for t in threads), "a caller hung after the server died"
        assert len(outcomes) == 8
        for tid, (error, finished) in sorted(outcomes.items()):
            assert isinstance(error, NetworkError), f"caller {tid}: {error!r}"
            assert not isinstance(error, RequestTimeoutError), f"caller {tid} waited for its deadline"
            assert finished - killed_at < 3, f"caller {tid} failed {finished - killed_at:.1f}s after the kill"
        assert lost_event.wait(timeout=1) and isinstance(lost[0], NetworkError)
        assert len(lost) == 1

        # While it is down, a request retries the reconnect, then names the server it could not reach.
        started = time.monotonic()
        with pytest.raises(NetworkError) as caught:
            conn.ping()
        assert f"{inst.host}:{inst.port}" in str(caught.value)
        assert time.monotonic() - started < 5

        cluster.start("inst1")
        assert conn.ping(notime=True) == "Success"  # reconnected on this request
        assert conn.call("whoami").data[0]["name"] == "inst1"
        assert conn.select("test_int", 0).data is not None
        assert not conn.is_closed()
    finally:
        conn.close()


def test_a_lazy_connection_reconnects_to_a_restarted_server(fresh_cluster: Any) -> None:
    cluster = fresh_cluster
    conn = connect(cluster, "inst2", connect_now=False)
    try:
        assert conn.is_closed()
        assert conn.call("whoami").data[0]["name"] == "inst2"  # connects on the first request
        cluster.kill("inst2")
        with pytest.raises(NetworkError):
            conn.call("whoami")
        cluster.start("inst2")
        assert conn.call("whoami").data[0]["name"] == "inst2"
    finally:
        conn.close()


# -- the server hangs ---------------------------------------------------------------------

def test_frozen_server_times_out_at_the_deadline_and_works_after_thaw(fresh_cluster: Any) -> None:
    cluster = fresh_cluster
    conn = connect(cluster, "inst3")
    try:
        assert conn.call("echo", "before").data == ["before"]
        cluster.freeze("inst3")
        try:
            started = time.monotonic()
            with pytest.raises(RequestTimeoutError):
                conn.call("echo", "frozen", timeout=0.5)
            assert 0.5 <= time.monotonic() - started < 1.0
            started = time.monotonic()
            with pytest.raises(RequestTimeoutError):
                conn.ping(timeout=0.3)
            assert 0.3 <= time.monotonic() - started < 0.8
        finally:
            cluster.thaw("inst3")
        # The frozen requests are answered now, late: their replies are dropped.
        assert conn.call("echo", "thawed").data == ["thawed"]
        assert conn.call("whoami").data[0]["name"] == "inst3"
        assert not conn.is_closed()
    finally:
        conn.close()


def test_connection_timeout_bounds_a_connect_to_a_frozen_instance(fresh_cluster: Any) -> None:
    cluster = fresh_cluster
    inst = cluster.instances["inst3"]
    cluster.freeze("inst3")
    try:
        # The kernel still accepts the TCP connection; the greeting never comes.
        started = time.monotonic()
        with pytest.raises(NetworkError) as caught:
            connect(cluster, "inst3", connection_timeout=0.5)
        assert 0.5 <= time.monotonic() - started < 1.2
        assert f"{inst.host}:{inst.port}" in str(caught.value)

        lazy = connect(cluster, "inst3", connect_now=False, connection_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(NetworkError):
            lazy.connect()
        assert time.monotonic() - started < 1.2
        lazy.close()
    finally:
        cluster.thaw("inst3")
    with connect(cluster, "inst3", connection_timeout=5) as thawed:
        assert thawed.ping(notime=True) == "Success"


# -- the server is not there ----------------------------------------------------------------

def test_connect_to_a_closed_port_raises_network_error_naming_host_and_port() -> None:
    port = closed_port()
    started = time.monotonic()
    with pytest.raises(NetworkError) as caught:
        Connection("127.0.0.1", port, user="test", password="test-password")
    assert time.monotonic() - started < 2
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert caught.value.code == errno.ECONNREFUSED
    assert not isinstance(caught.value, ConnectionClosedError)


def test_a_request_on_a_lazy_connection_to_a_closed_port_gives_up_after_its_retries() -> None:
    port = closed_port()
    conn = Connection("127.0.0.1", port, connect_now=False, reconnect_max_attempts=3, reconnect_delay=0.05)
    try:
        started = time.monotonic()
        with pytest.raises(NetworkError) as caught:
            conn.call("echo", 1)
        assert 0.15 <= time.monotonic() - started < 2  # three pauses between four attempts
        assert f"127.0.0.1:{port}" in str(caught.value)
    finally:
        conn.close()
