"""The asyncio read path: each event loop's own socket per server (tarantool_pool/aio/wire.py).

What must hold: an awaited request travels on its loop's own connection
(never through the sync link and its reader thread); that connection lives
and dies with the sync link it accompanies (a dead, closed or replaced link
fails its requests at once); it is opened with the same address, TLS and
credentials, within the connect timeout, naming the server when the server
misbehaves; re-authentication moves new requests to a connection of the
new user; loops that have ended leave nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import Cluster
from support import run, until
from test_misbehaving_server import (
    GARBAGE,
    Client,
    FakeServer,
    answer_unknown_sync_then_real,
    greet_then_answer,
    greeting,
    reply,
)

from tarantool_pool import ConnectionPool, Mode, aio
from tarantool_pool.aio.engine import loop_state
from tarantool_pool.errors import ConnectionClosedError, NetworkError, PoolClosedError, ProtocolError

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("no_leaked_readers")]

SESSION_ID = "return box.session.id()"
SESSION_USER = "return box.session.user()"


def session_of(result: Any) -> int:
    return int(result.data[0])


# -- the loop's own connection ------------------------------------------------------------

def test_awaited_requests_travel_on_the_loops_own_connection_not_the_sync_link(aconn: aio.Connection) -> None:
    async def scenario() -> tuple[int, int]:
        on_loop = session_of(await aconn.eval(SESSION_ID))
        link = aconn.sync._link
        assert link is not None
        calls = [asyncio.ensure_future(aconn.call("sleep", 0.3)) for _ in range(20)]
        await asyncio.sleep(0.1)  # sent: they are on the server now
        assert len(link.pending) == 0  # nothing of them on the sync link
        assert aconn.in_flight == 20  # but counted as the connection's requests in flight
        await asyncio.gather(*calls)
        assert aconn.in_flight == 0
        return on_loop, session_of(aconn.sync.eval(SESSION_ID))

    on_loop, on_sync_link = run(scenario())
    assert on_loop != on_sync_link


def test_each_event_loop_opens_its_own_connection_once(aconn: aio.Connection) -> None:
    sessions: dict[str, set[int]] = {}

    def in_a_thread(name: str) -> None:
        async def scenario() -> set[int]:
            results = await asyncio.gather(*(aconn.eval(SESSION_ID) for _ in range(50)))
            return {session_of(result) for result in results}
        sessions[name] = run(scenario())

    threads = [threading.Thread(target=in_a_thread, args=(f"loop-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(sessions["loop-0"]) == 1 and len(sessions["loop-1"]) == 1  # one connection per loop
    assert sessions["loop-0"] != sessions["loop-1"]


def server_connections(cluster: Cluster) -> int:
    return int(cluster.admin("inst1", "return box.stat.net().CONNECTIONS.current"))


async def until_server_connections(cluster: Cluster, expected: int) -> None:
    await until(lambda: server_connections(cluster) == expected, 10,
                f"inst1 back to {expected} client connection(s)")


def test_loops_that_have_ended_leave_no_connection_behind(aconn: aio.Connection, cluster: Cluster) -> None:
    run(aconn.connect())  # the sync link
    baseline = server_connections(cluster)
    for _ in range(5):  # five event loops, one after another (asyncio.run each time)
        run(aconn.eval(SESSION_ID))
    run(until_server_connections(cluster, baseline))  # each loop's connection closed as the loop shut down
    assert aconn.sync._companions_of(aconn.sync._link) == []

    def one_loop_in_a_thread() -> None:
        run(aconn.eval(SESSION_ID))

    workers = [threading.Thread(target=one_loop_in_a_thread) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    run(until_server_connections(cluster, baseline))  # threads that ran one loop and went idle

    loop = asyncio.new_event_loop()  # closed by hand, without asyncio.run's shutdown
    loop.run_until_complete(aconn.eval(SESSION_ID))
    loop.close()
    run(aconn.eval(SESSION_ID))  # this thread's next loop finds the closed one and lets go of its socket
    run(until_server_connections(cluster, baseline))


def test_a_second_drain_waits_like_the_first(aconn: aio.Connection) -> None:
    async def drain_while_a_call_runs() -> tuple[bool, bool]:
        slow = asyncio.ensure_future(aconn.call("sleep", 0.5))
        await asyncio.sleep(0.1)
        idle = await asyncio.to_thread(aconn.sync.wait_idle, 10)
        finished = slow.done()
        await slow
        return idle, finished

    assert run(drain_while_a_call_runs()) == (True, True)
    assert run(drain_while_a_call_runs()) == (True, True)  # the drain before must not end this one at once
    sync = aconn.sync
    for _ in range(2):  # the same on the sync link
        caller = threading.Thread(target=sync.call, args=("sleep", 0.5))
        caller.start()
        time.sleep(0.1)
        assert sync.in_flight == 1
        assert sync.wait_idle(10) and sync.in_flight == 0  # returned once the reply came, not at once
        caller.join(5)


# -- living and dying with the sync link ----------------------------------------------------

def test_a_dead_sync_link_fails_the_loops_requests_at_once_and_the_next_request_reconnects(
        aconn: aio.Connection) -> None:
    async def scenario() -> None:
        before = session_of(await aconn.eval(SESSION_ID))
        link = aconn.sync._link
        assert link is not None
        slow = asyncio.ensure_future(aconn.call("sleep", 5))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await asyncio.to_thread(link.lose, NetworkError(0, "the test cut the link"))  # as a reader would
        with pytest.raises(NetworkError, match="the test cut the link"):
            await slow
        assert time.monotonic() - started < 1  # at once, not at the reply or the deadline
        after = session_of(await aconn.eval(SESSION_ID))  # a new sync link, and a new loop connection
        assert after != before and aconn.sync._link is not link

    run(scenario())


def test_pool_close_fails_requests_on_the_loops_connections_at_once(cluster: Cluster) -> None:
    async def scenario() -> None:
        pool = aio.ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password)
        await pool.connect()
        slow = asyncio.ensure_future(pool.call("sleep", 5, mode=Mode.RW))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await pool.close()
        with pytest.raises(PoolClosedError):
            await slow
        assert time.monotonic() - started < 3

    run(scenario())


def test_a_drain_waits_for_requests_on_the_loops_connections(cluster: Cluster) -> None:
    async def scenario() -> Any:
        pool = aio.ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password)
        await pool.connect()
        slow = asyncio.ensure_future(pool.call("sleep", 0.5, "drained", mode=Mode.RW))
        await asyncio.sleep(0.1)
        await pool.close(drain_timeout=10)  # returns once the request in flight is answered
        assert slow.done()
        return slow.result()

    assert run(scenario()) is not None


def test_reauthentication_sends_new_requests_as_the_new_user(aconn: aio.Connection, cluster: Cluster) -> None:
    async def scenario() -> tuple[str, str, str]:
        first = (await aconn.eval(SESSION_USER)).data[0]
        in_flight = asyncio.ensure_future(aconn.eval("require('fiber').sleep(0.3) return box.session.user()"))
        await asyncio.sleep(0.1)
        await aconn.authenticate("limited", "limited-password")
        finished = (await in_flight).data[0]  # the old connection finished what it had
        after = await aconn.ping(notime=True)  # the public role may ping, not eval
        assert after == "Success"
        return first, finished, aconn.sync.user or ""

    first, finished, user = run(scenario())
    assert (first, finished, user) == (cluster.user, cluster.user, "limited")
    with pytest.raises(Exception, match="Execute access"):  # the loop's new connection is the new user's
        run(aconn.eval(SESSION_USER))


def test_a_sync_caller_and_an_awaited_caller_share_the_pools_units_but_not_sockets(cluster: Cluster) -> None:
    pool = ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password)
    try:
        apool = aio.ConnectionPool.from_sync(pool)
        before = sum(instance["requests"] for instance in pool.get_stats()["instances"].values())
        on_sync = session_of(pool.eval(SESSION_ID, mode=Mode.RW))
        on_loop = session_of(run(apool.eval(SESSION_ID, mode=Mode.RW)))
        assert on_sync != on_loop
        after = sum(instance["requests"] for instance in pool.get_stats()["instances"].values())
        assert after - before == 2  # one unit's counters, whichever path
    finally:
        pool.close()


# -- opening: TLS, unix sockets, servers that misbehave ------------------------------------------

def test_over_a_unix_socket(cluster: Cluster, tmp_path: Path) -> None:
    inst = cluster.instances["inst1"]
    path = str(tmp_path / "iproto.sock")

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(inst.host, inst.port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def serve(ready: threading.Event, stop: list[asyncio.AbstractEventLoop]) -> None:
        async def main() -> None:
            server = await asyncio.start_unix_server(forward, path)
            stop.append(asyncio.get_running_loop())
            ready.set()
            async with server:
                await asyncio.Event().wait()
        try:
            asyncio.run(main())
        except RuntimeError:
            pass  # stopped

    ready = threading.Event()
    loops: list[asyncio.AbstractEventLoop] = []
    proxy = threading.Thread(target=serve, args=(ready, loops), daemon=True)
    proxy.start()
    assert ready.wait(10)
    try:
        connection = aio.Connection("unix/", path, user=cluster.user, password=cluster.password)

        async def scenario() -> list[Any]:
            try:
                return [(await connection.call("echo", "over a unix socket")).data,
                        [session_of(await connection.eval(SESSION_ID))]]
            finally:
                await connection.close()

        echoed, _ = run(scenario())
        assert echoed == ["over a unix socket"]
    finally:
        loops[0].call_soon_threadsafe(loops[0].stop)
        proxy.join(10)


def sync_link_greeted_then(second: Any) -> Any:
    """A fake server script: the first connection (the sync link) is a well-behaved server,
    every later one (the loop's own connection) runs ``second``."""
    connections = itertools.count()
    normal = greet_then_answer(answer_unknown_sync_then_real)

    def script(client: Client) -> None:
        if next(connections) == 0:
            normal(client)
        else:
            second(client)
    return script


@contextlib.contextmanager
def against(script: Any, connection_timeout: float = 2) -> Iterator[tuple[FakeServer, aio.Connection]]:
    """An aio.Connection (no user) to a fake server playing ``script``; both closed afterwards."""
    server = FakeServer(script)
    connection = aio.Connection(server.host, server.port, connection_timeout=connection_timeout)
    try:
        yield server, connection
    finally:
        run(connection.close())
        server.close()


def greet_with_garbage(client: Client) -> None:
    client.send(GARBAGE[:128])
    client.hold()


def test_a_loop_connection_whose_greeting_never_comes_fails_within_the_connect_timeout() -> None:
    never_greets = sync_link_greeted_then(lambda client: client.hold())
    with against(never_greets, connection_timeout=0.5) as (server, connection):
        started = time.monotonic()
        with pytest.raises(NetworkError, match=f"connect to {server.name}: timed out"):
            run(connection.call("echo", 1, timeout=5))
        assert time.monotonic() - started < 3


def test_a_loop_connection_greeted_with_garbage_names_the_server() -> None:
    with against(sync_link_greeted_then(greet_with_garbage)) as (server, connection):
        with pytest.raises(ProtocolError, match=f"connect to {server.name}: not a Tarantool server"):
            run(connection.call("echo", 1, timeout=5))


def test_a_reply_under_a_strangers_sync_is_dropped_and_the_real_one_delivered() -> None:
    with against(greet_then_answer(answer_unknown_sync_then_real)) as (_, connection):
        assert run(connection.call("anything", timeout=5)).data == ["yours"]


def test_a_greeting_and_replies_that_trickle_in_a_byte_at_a_time_are_read_whole() -> None:
    """The loop reads into one buffer that every read reuses: whatever it keeps between reads
    (part of the greeting, part of a frame) must be copied out before the next read lands."""
    def trickle(client: Client, data: bytes) -> None:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for offset in range(len(data)):
            client.send(data[offset:offset + 1])
            time.sleep(0.0005)  # the pacing is the point: each byte its own segment, its own read

    def script(client: Client) -> None:
        trickle(client, greeting())
        while (request := client.read_request()) is not None:
            _, sync, _ = request
            trickle(client, reply(sync, {0x30: [["trickled", sync]]}))

    async def three_in_a_row(connection: aio.Connection) -> list[Any]:
        return [(await connection.call("anything", timeout=10)).data for _ in range(3)]

    with against(sync_link_greeted_then(script)) as (_, connection):
        replies = run(three_in_a_row(connection))
    assert [data[0][0] for data in replies] == ["trickled"] * 3
    assert len({data[0][1] for data in replies}) == 3, "each reply under its own request's sync"


def test_a_server_that_hangs_up_fails_the_request_with_its_cause() -> None:
    def greet_then_hang_up(client: Client) -> None:
        client.send(greeting())
        client.read_request()
        client.sock.shutdown(socket.SHUT_RDWR)

    with against(sync_link_greeted_then(greet_then_hang_up)) as (_, connection):
        with pytest.raises(ConnectionClosedError, match="the server closed the connection"):
            run(connection.call("anything", timeout=5))


def test_a_reauthentication_while_the_loop_connection_opens_moves_the_request_to_a_new_one(
        aconn: aio.Connection, cluster: Cluster) -> None:
    async def scenario() -> tuple[str, str]:
        await aconn.connect()
        first = asyncio.ensure_future(aconn.eval(SESSION_USER, timeout=5))
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the loop's connection is being opened now
        aconn.sync.authenticate(cluster.user, cluster.password)  # retires it (same user: nothing else changes)
        return (await first).data[0], (await aconn.eval(SESSION_USER)).data[0]

    assert run(scenario()) == (cluster.user, cluster.user)


def test_callers_sharing_a_failed_opening_each_get_their_own_error() -> None:
    with against(sync_link_greeted_then(greet_with_garbage)) as (_, connection):
        async def scenario() -> list[BaseException]:
            await connection.connect()
            return await asyncio.gather(*(connection.call("echo", i, timeout=5) for i in range(20)),
                                        return_exceptions=True)

        errors = run(scenario())
        assert all(isinstance(error, ProtocolError) for error in errors), errors
        assert len({id(error) for error in errors}) == 20  # not one object whose traceback all of them edit
        assert all(error.__cause__ is not error for error in errors)


@pytest.mark.slow
def test_a_server_that_stops_reading_loses_the_loop_connection_after_the_send_timeout(cluster: Cluster) -> None:
    inst = cluster.instances["inst1"]
    connection = aio.Connection(inst.host, inst.port, user=cluster.user, password=cluster.password,
                                socket_timeout=1)

    async def scenario() -> None:
        await connection.ping()
        wire = next(iter(loop_state().links.values()))
        cluster.freeze("inst1")
        try:
            blob = "x" * 200_000
            while wire.alive:  # far more than the socket buffers hold: asyncio pauses our writing
                results = await asyncio.gather(*(connection.call("echo", blob, timeout=0.3) for _ in range(50)),
                                               return_exceptions=True)
                assert all(isinstance(result, NetworkError) for result in results), results
            assert "timed out (the server read nothing for 1 s)" in str(wire.lost_reason)
        finally:
            cluster.thaw("inst1")
        assert (await connection.call("echo", "after the thaw", timeout=10)).data == ["after the thaw"]

    try:
        run(scenario(), timeout=60)
    finally:
        run(connection.close())
