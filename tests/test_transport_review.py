"""Review of transport.Link's leader/follower reading: the edge cases the stress test does not reach.

Against the scripted IPROTO server of tests/test_transport.py (no Tarantool).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from test_transport import ScriptedServer, connect, wait_until

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
        assert link is not None and link.alive, link.lost_reason


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
        wait_until(lambda: link._leader is not None, "the slow caller never took the reading role")

        def interrupt() -> None:  # once the main thread sleeps as a follower
            wait_until(lambda: any(slot.parked for slot in list(link.pending.values())), "never parked")
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=interrupt).start()
        with pytest.raises(KeyboardInterrupt):
            conn.call("op", ["no reply", 0, 0, True], timeout=10)
        slow.join(5)
        assert slow_reply == [["slow"]]
        assert conn.in_flight == 0
