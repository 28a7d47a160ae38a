"""Drop-in import path: ``from tarantool_pool.connection_pool import ConnectionPool, Mode``.

Mirrors ``tarantool.connection_pool`` so code written for tarantool-python
switches by changing the package name only.
"""

from .errors import PoolTolopogyError, PoolTolopogyWarning, PoolTopologyError, PoolTopologyWarning
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

__all__ = ["ConnectionPool", "InstanceState", "Mode", "PoolTask", "PoolTolopogyError", "PoolTolopogyWarning",
           "PoolTopologyError", "PoolTopologyWarning", "PoolUnit", "RoundRobinStrategy", "Status",
           "StrategyInterface", "queue_factory"]
