"""The replica-set pool: strategy (pure routing), units (one per server), the pool itself."""

from .pool import ConnectionPool
from .strategy import InstanceState, Mode, RoundRobinStrategy, Status, StrategyInterface
from .unit import PoolTask, PoolUnit, queue_factory

__all__ = ["ConnectionPool", "InstanceState", "Mode", "PoolTask", "PoolUnit", "RoundRobinStrategy", "Status",
           "StrategyInterface", "queue_factory"]
