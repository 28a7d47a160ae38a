"""tarantool_pool: use a Tarantool replica set as one database.

Import what you need from here; the submodules' layering is described in
docs/architecture.md.
"""

from __future__ import annotations

from .connection import Connection, Space
from .crud import CrudError, CrudResult
from .errors import *  # noqa: F401,F403 - the exception tree is part of the public API
from .msgpack_ext import ErrorInfo, Interval
from .pool import (
    ConnectionPool,
    InstanceState,
    Mode,
    PoolTask,
    PoolUnit,
    RoundRobinStrategy,
    Status,
    StrategyInterface,
    queue_factory,
)
from .response import Response

__version__ = "0.1.0"
