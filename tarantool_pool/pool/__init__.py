"""The replica-set pool: strategy (pure routing), units (one per server), the pool itself."""

from .failover import EventKind, PoolEvent
from .pool import ConnectionPool
from .strategy import InstanceState, LeastLoadedStrategy, Mode, RoundRobinStrategy, Status, StrategyInterface
from .unit import PoolTask, PoolUnit, queue_factory

__all__ = [
    "ConnectionPool", "EventKind", "PoolEvent", "InstanceState", "LeastLoadedStrategy", "Mode", "PoolTask",
    "PoolUnit", "RoundRobinStrategy", "Status",
           "StrategyInterface", "queue_factory"]
