"""Review of transport.Link's leader/follower reading: the edge cases the stress test does not reach.

Against the scripted IPROTO server of tests/test_transport.py (no Tarantool).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_transport import ScriptedServer, connect

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
