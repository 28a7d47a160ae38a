"""transport.Link's leader/follower reading at its edges, which the stress test does not reach:
a Ctrl-C in a leader or a follower, an ``on_push`` that raises, a deadline beyond what
poll() takes, close() with a reader in poll(), a request registered on a dead link.

Against the scripted IPROTO server of tests/test_transport.py (no Tarantool),
plus a hand-driven server where a test needs to control how reply bytes are cut.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from support import wait_for
from test_transport import GREETING, ScriptedServer, connect, reply_frame

from tarantool_pool import Connection, NetworkError, RequestTimeoutError, transport
from tarantool_pool import protocol as p

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    yield scripted
    scripted.close()


def test_a_timeout_longer_than_poll_can_wait_does_not_kill_the_link(server: ScriptedServer) -> None:
    # poll() takes at most 2**31-1 ms (24.8 days): a longer deadline made it raise OverflowError in
    # the leader, which then lost the link (every caller on it failed) over a perfectly good timeout.
    with connect(server) as conn:
        month = 30 * 86400.0
        assert conn.call("op", ["long", 0.01, 0, False], timeout=month).data == ["long"]
        link = conn._link
        assert link is not None and link.alive, link and link.lost_reason


def test_a_caller_whose_on_push_raises_leaves_nothing_pending(server: ScriptedServer) -> None:
    # The caller is gone (on_push's exception went up its stack): its request must not stay in
    # `pending` until a reply that may never come (in_flight, wait_idle and least-loaded read it).
    with connect(server) as conn:
        def boom(item: Any, ctx: Any) -> None:
            raise ValueError("on_push failed")

        with pytest.raises(ValueError):
            conn.call("op", ["pushes, no reply", 0, 1, True], timeout=5, on_push=boom)
        assert conn.in_flight == 0
        assert conn.wait_idle(0.5)
        assert conn.call("op", ["after", 0, 0, False]).data == ["after"]


def test_a_follower_interrupted_by_ctrl_c_leaves_nothing_pending(server: ScriptedServer) -> None:
    with connect(server) as conn:
        link = conn._link
        assert link is not None
        slow_reply: list[Any] = []
        slow = threading.Thread(target=lambda: slow_reply.append(conn.call("op", ["slow", 0.5, 0, False],
                                                                            timeout=5).data))
        slow.start()
        wait_for(lambda: link._leader is not None, 5, "the slow caller never took the reading role")

        def interrupt() -> None:  # once the main thread sleeps as a follower
            wait_for(lambda: any(slot.parked for slot in list(link.pending.values())), 5, "never parked")
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=interrupt).start()
        with pytest.raises(KeyboardInterrupt):
            conn.call("op", ["no reply", 0, 0, True], timeout=10)
        slow.join(5)
        assert slow_reply == [["slow"]]
        assert conn.in_flight == 0


class CutServer:
    """Answers the first request (X) only once a second one (Y) arrived, with a reply cut in two sends.

    X's reply carries, at the very end of a bin field, bytes that form a complete
    frame for Y's sync.  Read whole, they are data; read from the cut, they are a reply to Y.
    """

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.client: socket.socket | None = None
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        client, _ = self.listener.accept()
        self.client = client
        client.sendall(GREETING)
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        items: list[Any] = []
        syncs: list[int] = []
        while len(syncs) < 2:
            data = client.recv(65536)
            if not data:
                return
            unpacker.feed(data)
            items.extend(unpacker)
            while len(items) >= 3:
                syncs.append(items[1][p.KEY_SYNC])
                del items[:3]
        x_sync, y_sync = syncs
        forged = reply_frame(0, y_sync, ["forged for Y"])
        header = msgpack.packb({p.KEY_CODE: 0, p.KEY_SYNC: x_sync})
        body_head = b"\x81" + msgpack.packb(p.KEY_DATA) + b"\x91" + b"\xc4" + bytes([len(forged)])
        payload = header + body_head + forged
        head = b"\xce" + len(payload).to_bytes(4, "big") + header + body_head
        try:
            client.sendall(head)
            time.sleep(0.3)  # the leader reads the head alone
            client.sendall(forged)
        except OSError:  # the client dropped the link (as it should) and the test closed us
            pass

    def close(self) -> None:
        self.listener.close()
        if self.client is not None:
            self.client.close()


def test_ctrl_c_in_a_leader_after_it_took_bytes_cannot_hand_a_forged_reply_to_another_caller(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A KeyboardInterrupt reaches the main thread at the first check after a C call returns: after
    # recv_into has taken bytes out of the socket, before the decoder got them.  Those bytes are gone,
    # and the next reader decodes the stream from the middle of a frame.  Simulated exactly there.
    real_recv = transport.Link._recv
    fired: list[bool] = []

    def recv_then_interrupted(link: transport.Link, timeout: float) -> Any:
        data = real_recv(link, timeout)
        if data and not fired and threading.current_thread() is threading.main_thread():
            fired.append(True)
            raise KeyboardInterrupt
        return data

    monkeypatch.setattr(transport.Link, "_recv", recv_then_interrupted)
    cut = CutServer()
    conn = Connection("127.0.0.1", cut.port, fetch_schema=False, auto_reconnect=False)
    try:
        link = conn._link
        assert link is not None
        outcome: list[Any] = []

        def caller_y() -> None:
            wait_for(lambda: link._leader is not None, 5, "X's caller never led")
            try:
                outcome.append(conn.call("op", ["Y"], timeout=3).data)
            except NetworkError as exc:  # the link is not trustworthy any more: fine
                outcome.append(exc)
            except Exception as exc:  # a timeout: the reply was lost, not forged; still recorded
                outcome.append(exc)

        other = threading.Thread(target=caller_y)
        other.start()
        with pytest.raises(KeyboardInterrupt):
            conn.call("op", ["X"], timeout=3)
        other.join(5)
        assert fired and len(outcome) == 1
        assert outcome[0] != ["forged for Y"], "bytes inside X's reply were delivered to Y as its reply"
        assert isinstance(outcome[0], NetworkError), outcome[0]
    finally:
        conn.close()
        cut.close()


def test_close_with_a_leader_in_poll_closes_the_socket_and_ends_the_watcher(server: ScriptedServer) -> None:
    conn = connect(server)
    link = conn._link
    assert link is not None
    errors: list[BaseException] = []

    def caller(tag: int) -> None:
        try:
            conn.call("op", [tag, 5.0, 0, False], timeout=10)
        except BaseException as exc:  # recorded, checked below
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(link.pending) == 4 and link._leader is not None, 5, "never settled")
    conn.close()
    for thread in threads:
        thread.join(3)
    assert len(errors) == 4
    wait_for(lambda: link.sock.fileno() == -1, 5, "the socket was never closed")
    assert link._leader is None
    assert link._watcher is None or not link._watcher.is_alive()


def test_register_on_a_dead_link_fails_the_slot_at_once(server: ScriptedServer) -> None:
    conn = connect(server)
    link = conn._link
    assert link is not None
    conn.close()
    slot = transport.ReplySlot()
    link.register(123, slot)
    assert slot.done and slot.error is not None and 123 not in link.pending
    started = time.monotonic()
    assert link.wait(123, slot, time.monotonic() + 5)
    assert time.monotonic() - started < 0.5


def test_ctrl_c_while_a_leader_hands_the_role_on_leaves_nobody_asleep_with_it(
        server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Python raises a KeyboardInterrupt at a function's entry: in _pass_role, at the entry of the call
    # that wakes the new leader, after _leader already named it.  The follower then held the role
    # asleep: nobody read until its own deadline, and every other caller timed out meanwhile.
    real_wake = transport.Link._wake
    fired: list[bool] = []

    def interrupted_wake(link: transport.Link, slot: transport.ReplySlot) -> None:
        if (not fired and threading.current_thread() is threading.main_thread()
                and link._leader is slot and slot.parked):  # called from _pass_role
            fired.append(True)
            raise KeyboardInterrupt
        real_wake(link, slot)

    monkeypatch.setattr(transport.Link, "_wake", interrupted_wake)
    with connect(server) as conn:
        link = conn._link
        assert link is not None
        got: list[Any] = []

        def follower() -> None:
            wait_for(lambda: link._leader is not None, 5, "the main thread never led")
            started = time.monotonic()
            try:
                got.append(conn.call("op", ["Y", 0.4, 0, False], timeout=5).data)
            except RequestTimeoutError as exc:
                got.append(exc)
            got.append(time.monotonic() - started)

        thread = threading.Thread(target=follower)
        thread.start()
        try:
            conn.call("op", ["X", 0.2, 0, False], timeout=5)
        except KeyboardInterrupt:
            pass
        thread.join(6)
        assert got and got[0] == ["Y"] and got[1] < 2.0, got
