"""Prometheus metrics for a ConnectionPool: the optional extra ``tarantool_pool[prometheus]``.

::

    from tarantool_pool import prometheus
    metrics = prometheus.register(pool, name="orders")     # into prometheus_client.REGISTRY
    ...
    metrics.unregister()                                   # its series leave the next scrape

Rules:

- Only this module imports prometheus_client: ``import tarantool_pool`` never
  does, and without the package importing this module raises an ImportError
  that names the extra to install.
- Nothing runs on the request path.  Gauges and per-instance counters are read
  from ``pool.get_stats()`` when a scrape happens; the only hook is an event
  listener that adds one to a dict entry under a lock.
- One collector per registry serves every pool registered in it (label
  ``pool``): a scrape holds each metric family once, however many pools.
- A counter never goes down between two scrapes: the pool's counters are
  plain integers bumped without a lock, and a lost update could otherwise look
  like a reset to Prometheus.  An instance that leaves the pool takes its
  series with it; if it comes back, its counters start again from zero.
- A scrape that cannot read one pool's stats logs the error and leaves that
  pool out; it never fails the scrape of the others.

docs/metrics.md lists the metrics.
"""

from __future__ import annotations

import inspect
import logging
import threading
import weakref
from typing import Any, Iterator, Sequence

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as error:  # the extra is not installed
    raise ImportError("tarantool_pool.prometheus needs the prometheus_client package: "
                      "pip install 'tarantool_pool[prometheus]'", name="prometheus_client") from error

from .pool.failover import EventKind, PoolEvent

__all__ = ["PoolCollector", "PoolMetrics", "register"]

log = logging.getLogger("tarantool_pool")

LABELS = ("pool", "instance")
ROLES = ("rw", "ro", "down")

#: get_stats() field -> (metric name, help, unit).  None (not known yet) leaves the sample out.
GAUGES: dict[str, tuple[str, str, str]] = {
    "in_flight": ("tarantool_pool_in_flight_requests",
                  "Requests sent to the instance and not answered yet.", ""),
    "rtt": ("tarantool_pool_refresh_rtt_seconds",
            "Smoothed round trip of the pool's box.info refresh of the instance.", "seconds"),
    "lag": ("tarantool_pool_replication_lag_seconds",
            "Replication lag of the instance behind the master (0 on the master, +Inf when it does not "
            "follow the master).", "seconds"),
    "last_refresh_age": ("tarantool_pool_refresh_age_seconds",
                         "Seconds since the pool's last box.info refresh of the instance finished.", "seconds"),
}

#: get_stats() field -> (counter name without _total, help).
COUNTERS: dict[str, tuple[str, str]] = {
    "requests": ("tarantool_pool_requests",
                 "Request attempts sent to the instance (each attempt of a retried request counts where it went)."),
    "errors": ("tarantool_pool_errors",
               "Request attempts on the instance that failed (server errors, network errors, timeouts)."),
    "retries": ("tarantool_pool_retries",
                "Retries caused by a failed attempt on the instance (to another instance when one fits)."),
    "timeouts": ("tarantool_pool_timeouts",
                 "Request attempts on the instance that passed their deadline (also counted in errors)."),
}

EVENTS = ("tarantool_pool_events",
          "Pool events per instance and kind: " + ", ".join(kind.value for kind in EventKind) + ".")


class PoolMetrics:
    """One pool registered in one registry: counts its events, remembers its counters' high marks.

    Made by :func:`register`; ``unregister()`` (or ``close()``, or leaving a
    ``with`` block) removes its series and its listener.  ``collect()``
    yields this pool's metric families alone.
    """

    def __init__(self, source: Any, name: str, registry: CollectorRegistry, collector: PoolCollector) -> None:
        self.pool = source
        self.name = name
        self.registry = registry
        self._collector = collector
        self._lock = threading.Lock()
        self._events: dict[tuple[str, str], int] = {}  # (instance, kind) -> count
        self._highs: dict[tuple[str, str], float] = {}  # (instance, counter field) -> highest value exported
        self._closed = False
        self.listener = self._on_event  # one bound method object: remove_listener() compares identity

    def __repr__(self) -> str:
        state = "unregistered" if self._closed else "registered"
        return f"<tarantool_pool.prometheus.PoolMetrics pool={self.name!r} {state}>"

    def _on_event(self, event: PoolEvent) -> None:
        """The pool's listener: runs in whichever pool thread saw the event."""
        key = (event.instance, event.kind.value)
        with self._lock:
            if not self._closed:
                self._events[key] = self._events.get(key, 0) + 1

    def unregister(self) -> None:
        """Remove this pool's series from the registry and stop counting its events.  Idempotent."""
        with _shared_lock:
            if self._closed:
                return
            self._closed = True
            self._collector._remove(self)
        remove_listener = getattr(self.pool, "remove_listener", None)
        if remove_listener is not None:
            remove_listener(self.listener)

    close = unregister

    def __enter__(self) -> PoolMetrics:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.unregister()

    def collect(self) -> Iterator[Metric]:
        """This pool's metric families, read now."""
        return _families([self])

    def read(self) -> tuple[dict[str, Any], dict[tuple[str, str], int]] | None:
        """(stats with monotonic counters, event counts) now; None when the stats cannot be read."""
        try:
            stats = self.pool.get_stats()
            instances = {str(name): dict(row) for name, row in stats.get("instances", {}).items()}
        except Exception:
            log.exception("prometheus: cannot read the stats of pool %r", self.name)
            return None
        with self._lock:
            for key in [key for key in self._highs if key[0] not in instances]:
                del self._highs[key]  # the instance left the pool: a new one starts from zero
            for key in [key for key in self._events if key[0] not in instances]:
                del self._events[key]
            for instance, row in instances.items():
                for field in COUNTERS:
                    value = row.get(field)
                    if not isinstance(value, (int, float)):
                        continue
                    high = self._highs.get((instance, field), 0)
                    if value < high:
                        row[field] = high  # a lost unlocked increment, not a reset
                    else:
                        self._highs[(instance, field)] = value
            events = dict(self._events)
        return {"closed": bool(stats.get("closed")), "instances": instances}, events


class PoolCollector(Collector):
    """The collector of one registry: the metric families of every pool registered in it."""

    def __init__(self) -> None:
        self._members: dict[str, PoolMetrics] = {}  # replaced, never mutated: collect() reads it without a lock

    def collect(self) -> Iterator[Metric]:
        return _families(list(self._members.values()))

    def describe(self) -> Iterator[Metric]:
        """The families without samples, so the registry can refuse a clashing metric name."""
        return _families([])

    def _add(self, metrics: PoolMetrics) -> None:
        if metrics.name in self._members:
            raise ValueError(f"a pool named {metrics.name!r} is already registered in this registry; "
                             "give each pool its own name=")
        self._members = {**self._members, metrics.name: metrics}

    def _remove(self, metrics: PoolMetrics) -> None:
        self._members = {name: known for name, known in self._members.items() if known is not metrics}
        if not self._members:
            metrics.registry.unregister(self)
            _shared.pop(metrics.registry, None)


_shared_lock = threading.Lock()  # registering and unregistering pools; never taken by a scrape
_shared: weakref.WeakKeyDictionary[CollectorRegistry, PoolCollector] = weakref.WeakKeyDictionary()


def register(pool: Any, registry: CollectorRegistry = REGISTRY, name: str = "default") -> PoolMetrics:
    """Export ``pool``'s stats and events to ``registry`` under the label ``pool=name``.

    ``pool`` is a ConnectionPool, or any object with ``get_stats()`` and
    ``add_listener()`` (an asyncio facade's ``.sync`` engine is used when it
    has one).  Each pool in a registry needs its own ``name``: ValueError
    otherwise.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    source = _stats_source(pool)
    with _shared_lock:
        collector = _shared.get(registry)
        if collector is None:
            collector = PoolCollector()
            registry.register(collector)  # DuplicateTimeseries (a ValueError) if another collector owns a name
            _shared[registry] = collector
        metrics = PoolMetrics(source, name, registry, collector)
        collector._add(metrics)
    source.add_listener(metrics.listener)
    return metrics


def _stats_source(pool: Any) -> Any:
    """The object to read stats from: ``pool.sync`` when it has them (an asyncio facade), else ``pool``."""
    for candidate in (getattr(pool, "sync", None), pool):
        get_stats = getattr(candidate, "get_stats", None)
        if (callable(get_stats) and callable(getattr(candidate, "add_listener", None))
                and not inspect.iscoroutinefunction(get_stats)):
            return candidate
    raise TypeError("register() needs a ConnectionPool: an object with get_stats() and add_listener(), "
                    f"or whose .sync attribute has them; got {type(pool).__name__}")


def _families(members: Sequence[PoolMetrics]) -> Iterator[Metric]:
    up = GaugeMetricFamily("tarantool_pool_instance_up",
                           "1 when the pool routes requests to the instance (connected, box.info.status "
                           "'running'), else 0.", labels=LABELS)
    role = GaugeMetricFamily("tarantool_pool_instance_role",
                             "1 for the instance's current role as the pool sees it (rw: master, ro: replica, "
                             "down), 0 for the others.", labels=(*LABELS, "role"))
    gauges = {field: GaugeMetricFamily(metric, text, labels=LABELS, unit=unit)
              for field, (metric, text, unit) in GAUGES.items()}
    counters = {field: CounterMetricFamily(metric, text, labels=LABELS) for field, (metric, text) in COUNTERS.items()}
    events = CounterMetricFamily(*EVENTS, labels=(*LABELS, "kind"))
    closed = GaugeMetricFamily("tarantool_pool_closed", "1 once the pool is closed, else 0.", labels=("pool",))
    for metrics in members:
        read = metrics.read()
        if read is None:
            continue
        stats, event_counts = read
        closed.add_metric([metrics.name], 1.0 if stats["closed"] else 0.0)
        kinds = [kind.value for kind in EventKind]
        kinds += sorted({kind for _, kind in event_counts} - set(kinds))
        for instance, row in stats["instances"].items():
            labels = [metrics.name, instance]
            current = str(row.get("role"))
            up.add_metric(labels, 0.0 if current == "down" else 1.0)
            for known in ROLES if current in ROLES else (*ROLES, current):
                role.add_metric([*labels, known], 1.0 if known == current else 0.0)
            for field, family in gauges.items():
                value = row.get(field)
                if isinstance(value, (int, float)):
                    family.add_metric(labels, float(value))
            for field, counter in counters.items():
                value = row.get(field)
                if isinstance(value, (int, float)):
                    counter.add_metric(labels, float(value))
            for kind in kinds:
                events.add_metric([*labels, kind], float(event_counts.get((instance, kind), 0)))
    yield up
    yield role
    yield from gauges.values()
    yield from counters.values()
    yield events
    yield closed
