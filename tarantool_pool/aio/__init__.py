"""asyncio facade: ``tarantool_pool.aio.ConnectionPool`` and ``tarantool_pool.aio.Connection``.

The same engine as the sync classes (units, health, strategy, failover),
the same methods as coroutines; each event loop reads and writes its own
socket per server, so an awaited request never crosses a thread.
docs/asyncio.md tells how a request travels.

Layout: wire.py (the loop's own socket: LoopLink), engine.py (send, await
the reply, deadlines), connection.py, routing.py (selection and failover,
awaited), pool.py, session.py.
"""

from __future__ import annotations

from ..pool.strategy import Mode
from .connection import Connection
from .pool import ConnectionPool

__all__ = ["Connection", "ConnectionPool", "Mode"]
