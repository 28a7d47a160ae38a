"""tarantool_pool: use a Tarantool replica set as one database.

Import what you need from here; docs/architecture.md describes the layers.
"""

from __future__ import annotations

from .connection import Connection, Space
from .crud import CrudError, CrudResult
from .errors import *  # noqa: F401,F403 - the exception tree is part of the public API
from .errors import __all__ as _error_names
from .helpers import ModeBoundPool, PoolSession, initialize, instance, shutdown, with_pool
from .msgpack_ext import ErrorInfo, Interval
from .pool import (
    ConnectionPool,
    EventKind,
    InstanceState,
    LeastLoadedStrategy,
    Mode,
    PoolEvent,
    PoolTask,
    PoolUnit,
    RoundRobinStrategy,
    Status,
    StrategyInterface,
    queue_factory,
)
from .response import Response
from .uri import parse_uri, pool_from_env

__version__ = "0.1.0"

__all__ = [
    "Connection", "ConnectionPool", "CrudError", "EventKind", "PoolEvent", "CrudResult", "ErrorInfo",
    "InstanceState", "Interval", "LeastLoadedStrategy", "Mode",
    "PoolTask", "PoolUnit", "Response", "RoundRobinStrategy", "Space", "Status", "StrategyInterface",
    "queue_factory", "ModeBoundPool", "PoolSession", "initialize", "instance", "shutdown", "with_pool",
    "parse_uri", "pool_from_env", *(name for name in _error_names if name != "Warning"),  # do not shadow the builtin
]
