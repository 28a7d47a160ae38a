"""Leader/follower reading in transport.Link, against a scripted IPROTO server in this process.

No Tarantool here: the server answers ``call('op', [tag, delay, pushes, drop])``
after ``delay`` seconds (so replies overtake each other), sends ``pushes``
out-of-band frames first, and never answers when ``drop``.  Link's lock can be
swapped for one that sleeps at random around its critical sections, which
widens every window between them; the checks then look for what a race would
break: a reply or push reaching the wrong caller or twice, two threads reading
at once, a parked caller with nobody reading.
"""

from __future__ import annotations

import base64
import heapq
import os
import random
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from support import wait_for

from tarantool_pool import (
    Connection,
    ConnectionClosedError,
    NetworkError,
    RequestTimeoutError,
    transport,
)
from tarantool_pool import protocol as p

pytestmark = pytest.mark.timeout(120)

GREETING = (b"Tarantool 2.11.0 (Binary) 00000000-0000-0000-0000-000000000000".ljust(63) + b"\n"
            + base64.b64encode(os.urandom(32)).ljust(63) + b"\n")


def reply_frame(status: int, sync: int, data: Any) -> bytes:
    payload = bytes(msgpack.packb({p.KEY_CODE: status, p.KEY_SYNC: sync}) + msgpack.packb({p.KEY_DATA: data}))
    return b"\xce" + len(payload).to_bytes(4, "big") + payload


class ScriptedServer:
    """Accepts connections; each one answers ``op`` calls as scripted by their arguments."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.clients: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.clients.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        write = threading.Lock()
        due: list[tuple[float, int, bytes]] = []
        ready = threading.Condition()
        gone = threading.Event()

        def send(data: bytes) -> None:
            with write:
                try:
                    client.sendall(data)
                except OSError:
                    gone.set()

        def later() -> None:
            while not gone.is_set():
                with ready:
                    if not due:
                        ready.wait(0.2)
                        continue
                    at, _, data = due[0]
                    if at > time.monotonic():
                        ready.wait(at - time.monotonic())
                        continue
                    heapq.heappop(due)
                send(data)

        threading.Thread(target=later, daemon=True).start()
        send(GREETING)
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        items: list[Any] = []
        order = 0
        try:
            while data := client.recv(65536):
                unpacker.feed(data)
                items.extend(unpacker)
                while len(items) >= 3:
                    _, header, body = items[:3]
                    del items[:3]
                    tag, delay, pushes, drop = body[p.KEY_TUPLE]
                    for number in range(pushes):
                        send(reply_frame(p.STATUS_CHUNK, header[p.KEY_SYNC], [tag, number]))
                    if not drop:
                        order += 1
                        with ready:
                            heapq.heappush(due, (time.monotonic() + delay, order,
                                                 reply_frame(0, header[p.KEY_SYNC], [tag])))
                            ready.notify()
        except OSError:
            pass
        finally:
            gone.set()

    def hang_up(self) -> None:
        for client in self.clients:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            client.close()
        self.clients = []

    def close(self) -> None:
        self.listener.close()
        self.hang_up()


class ChaosLock:
    """A Lock that now and then sleeps before taking it and after giving it back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(7)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._random.random() < 0.05:
            time.sleep(self._random.random() * 0.0005)
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()
        if self._random.random() < 0.1:
            time.sleep(self._random.random() * 0.0005)

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class Watch:
    """Wraps Link's reading and parking to record what must never happen."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, chaos: bool) -> None:
        self.violations: list[str] = []
        self.readers: list[str] = []  # thread name of every read
        reading: dict[int, str] = {}
        guard = threading.Lock()
        real_recv, real_park, real_init = transport.Link._recv, transport.Link._park, transport.Link.__init__
        watch = self

        def _recv(link: transport.Link, timeout: float) -> Any:
            me = threading.current_thread().name
            with guard:
                if id(link) in reading:
                    watch.violations.append(f"{me} read while {reading[id(link)]} was reading")
                reading[id(link)] = me
                watch.readers.append(me)
            try:
                return real_recv(link, timeout)
            finally:
                with guard:
                    reading.pop(id(link), None)

        def _park(link: transport.Link, slot: transport.ReplySlot) -> None:
            if link._leader is None:
                watch.violations.append("a caller parked with nobody reading")
            real_park(link, slot)

        def __init__(link: transport.Link, *args: Any, **kwargs: Any) -> None:
            real_init(link, *args, **kwargs)
            if chaos:
                link._lock = ChaosLock()  # type: ignore[assignment]

        monkeypatch.setattr(transport.Link, "_recv", _recv)
        monkeypatch.setattr(transport.Link, "_park", _park)
        monkeypatch.setattr(transport.Link, "__init__", __init__)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    yield scripted
    scripted.close()


def connect(server: ScriptedServer, **kwargs: Any) -> Connection:
    return Connection("127.0.0.1", server.port, fetch_schema=False, **kwargs)


@pytest.mark.parametrize("chaos", [False, True], ids=["plain", "chaos"])
def test_many_callers_get_their_own_replies_and_pushes_exactly_once_with_one_reader_at_a_time(
        server: ScriptedServer, monkeypatch: pytest.MonkeyPatch, chaos: bool) -> None:
    watch = Watch(monkeypatch, chaos)
    conn = connect(server)
    problems: list[str] = []
    counts = {"ok": 0, "timeouts": 0}
    stop = time.monotonic() + 4.0

    def caller(number: int) -> None:
        rng = random.Random(number)
        seq = 0
        while time.monotonic() < stop:
            seq += 1
            tag = f"{number}-{seq}"
            delay = rng.choice([0.0, 0.0, 0.0005, 0.002, 0.01, 0.05])
            pushes = rng.choice([0, 0, 1, 3])
            drop = rng.random() < 0.02
            timeout = 0.05 if drop else 3.0
            got: list[Any] = []

            def on_push(item: Any, ctx: Any, got: list[Any] = got) -> None:
                got.append(item)

            try:
                data = conn.call("op", [tag, delay, pushes, drop], timeout=timeout,
                                 on_push=on_push if pushes else None).data
            except RequestTimeoutError:
                counts["timeouts"] += 1
                if not drop:
                    problems.append(f"{tag}: timed out without a reason")
                continue
            counts["ok"] += 1
            if drop or data != [tag] or got != [[tag, n] for n in range(pushes)]:
                problems.append(f"{tag}: reply {data!r}, pushes {got!r}")

    threads = [threading.Thread(target=caller, args=(n,), name=f"caller-{n}") for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    conn.close()
    assert not any(thread.is_alive() for thread in threads), "a caller hung"
    assert problems == []
    assert watch.violations == []
    assert counts["ok"] > 100 and counts["timeouts"] > 0, counts
    assert set(watch.readers) <= {thread.name for thread in threads}, "only callers read"


def test_a_lone_caller_reads_its_own_reply_in_its_own_thread(
        server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    watch = Watch(monkeypatch, chaos=False)
    with connect(server) as conn:
        for seq in range(50):
            assert conn.call("op", [seq, 0, 0, False]).data == [seq]
    assert set(watch.readers) == {threading.current_thread().name}


def test_a_late_reply_waits_in_the_socket_and_is_dropped_by_the_next_reader(server: ScriptedServer) -> None:
    with connect(server) as conn:
        with pytest.raises(RequestTimeoutError):
            conn.call("op", ["late", 0.2, 0, False], timeout=0.05)
        link = conn._link
        assert link is not None
        poller = select.poll()
        poller.register(link.sock, select.POLLIN)
        assert poller.poll(5000), "the late reply never reached the socket"  # nobody reads an idle link
        assert conn.call("op", ["next", 0, 0, False]).data == ["next"]
        assert conn.in_flight == 0


def test_a_follower_times_out_at_its_own_deadline_while_another_caller_reads(server: ScriptedServer) -> None:
    with connect(server) as conn:
        slow = threading.Thread(target=conn.call, args=("op", ["slow", 1.0, 0, False]), kwargs={"timeout": 3})
        slow.start()
        link = conn._link
        assert link is not None
        wait_for(lambda: link._leader is not None, 5, "the slow caller never took the reading role")
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError):
            conn.call("op", ["dropped", 0, 0, True], timeout=0.2)
        assert 0.19 < time.monotonic() - started < 0.9  # its own deadline, long before the leader's reply
        assert conn.call("op", ["fast", 0, 0, False], timeout=1).data == ["fast"]
        slow.join(3)
        assert not slow.is_alive()


@pytest.mark.skipif(not hasattr(select, "epoll"), reason="the idle watcher needs epoll")
def test_a_server_hanging_up_on_an_idle_link_is_reported_at_once(server: ScriptedServer) -> None:
    lost = threading.Event()
    conn = connect(server, on_disconnect=lambda reason: lost.set(), auto_reconnect=False)
    try:
        assert conn.call("op", ["before", 0, 0, False]).data == ["before"]
        server.hang_up()
        assert lost.wait(1.0), "on_disconnect did not fire for an idle link"
        assert conn.is_closed()
        with pytest.raises(NetworkError):
            conn.call("op", ["after", 0, 0, False])
    finally:
        conn.close()


def test_close_fails_a_leader_and_its_followers_at_once(server: ScriptedServer) -> None:
    conn = connect(server)
    outcomes: list[tuple[BaseException | None, float]] = []

    def caller(tag: int) -> None:
        try:
            conn.call("op", [tag, 5.0, 0, False], timeout=10)
            outcomes.append((None, time.monotonic()))
        except BaseException as exc:  # recorded, checked below
            outcomes.append((exc, time.monotonic()))

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    link = conn._link
    assert link is not None
    wait_for(lambda: len(link.pending) == 6 and len([f for f in link._followers if f.parked]) == 5, 5,
             "the six callers never settled into one leader and five followers")
    closed_at = time.monotonic()
    conn.close()
    for thread in threads:
        thread.join(3)
    assert not any(thread.is_alive() for thread in threads)
    assert len(outcomes) == 6
    for error, finished in outcomes:
        assert isinstance(error, ConnectionClosedError), error
        assert finished - closed_at < 1.0
