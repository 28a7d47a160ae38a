"""asyncio facade: ``tarantool_pool.aio.ConnectionPool`` and ``tarantool_pool.aio.Connection``.

The same engine as the sync classes (links, reader threads, units, health,
failover), the same methods as coroutines.  docs/asyncio.md tells how a
request travels without a thread of its own.

Layout: engine.py (send, await the reply, deadlines), connection.py,
routing.py (selection and failover, awaited), pool.py.
"""

from __future__ import annotations

from ..pool.strategy import Mode
from .connection import Connection
from .pool import ConnectionPool

__all__ = ["Connection", "ConnectionPool", "Mode"]
