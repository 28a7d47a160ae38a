"""Routing: which instance serves a request of a given mode.  Pure code.

Rule: no threads, no sockets, no clocks.  A strategy reads each unit's
``state`` (status + read_only) when ``build()``/``update()`` is called and
keeps an immutable snapshot of candidates per role; ``getnext(mode)`` only
reads that snapshot, so the hot path takes no lock.  A mode maps to an ordered
list of roles through a table (asyncpg's way), not an if-ladder.
"""

from __future__ import annotations

import abc
import enum
import itertools
import random
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, NamedTuple, Optional

from ..errors import PoolTopologyError


class Mode(enum.Enum):
    """Request mode: where a request may go."""

    ANY = 1  #: any healthy instance
    RW = 2  #: the read-write instance (master)
    RO = 3  #: a read-only instance (replica)
    PREFER_RW = 4  #: the master if healthy, else a replica
    PREFER_RO = 5  #: a replica if any is healthy, else the master

    # Members are singletons compared by identity: hash them the C way too.  Enum's own
    # __hash__ is Python code, and routing looks a mode up in a few tables per request.
    __hash__ = object.__hash__


class Status(enum.Enum):
    """Health of one pool instance."""

    HEALTHY = 1  #: connected, box.info readable, box.info.status == 'running'
    UNHEALTHY = 2  #: anything else


@dataclass(frozen=True)
class InstanceState:
    """What the last refresh learned about an instance."""

    status: Status = Status.UNHEALTHY
    read_only: Optional[bool] = None


# Mode -> roles to try, in order; "any" means every healthy instance.
MODE_ROLES: dict[Mode, tuple[str, ...]] = {
    Mode.ANY: ("any",),
    Mode.RW: ("rw",),
    Mode.RO: ("ro",),
    Mode.PREFER_RW: ("rw", "ro"),
    Mode.PREFER_RO: ("ro", "rw"),
}


def role_of(state: InstanceState) -> str:
    """'rw', 'ro' or 'down' (the words error messages use)."""
    if state.status is not Status.HEALTHY or state.read_only is None:
        return "down"
    return "ro" if state.read_only else "rw"


class Snapshot(NamedTuple):
    """Candidates per role at one moment; never mutated."""

    by_role: dict[str, tuple[Any, ...]]
    description: str  # e.g. "127.0.0.1:3301 rw, 127.0.0.1:3302 down"


def take_snapshot(units: Iterable[Any]) -> Snapshot:
    by_role: dict[str, list[Any]] = {"rw": [], "ro": [], "any": []}
    parts = []
    for unit in units:
        role = role_of(unit.state)
        parts.append(f"{getattr(unit, 'name', unit)} {role}")
        if role != "down":
            by_role[role].append(unit)
            by_role["any"].append(unit)
    return Snapshot({role: tuple(found) for role, found in by_role.items()}, ", ".join(parts) or "no instances")


class StrategyInterface(abc.ABC):
    """Chooses a pool unit for a request mode (compatible with tarantool-python)."""

    def __init__(self, pool: Iterable[Any]) -> None:
        self.pool = list(pool)

    @abc.abstractmethod
    def getnext(self, mode: Mode) -> Any:
        """The unit for the next request of ``mode``; raises PoolTopologyError if none fits."""

    @abc.abstractmethod
    def update(self) -> None:
        """Re-read the units' states."""


class RoundRobinStrategy(StrategyInterface):
    """Round robin within a role, from a random start, with the mode's fallback order."""

    def __init__(self, pool: Iterable[Any]) -> None:
        super().__init__(pool)
        self._counters: dict[Mode, Iterator[int]] = {
            mode: itertools.count(random.randrange(1 << 16)) for mode in Mode
        }
        self.snapshot = take_snapshot(self.pool)

    def build(self) -> None:
        """Rebuild the candidate snapshot from the units' current states."""
        self.snapshot = take_snapshot(self.pool)

    def update(self) -> None:
        self.build()

    def set_units(self, units: Iterable[Any]) -> None:
        """Replace the unit list (topology changed) and rebuild."""
        self.pool = list(units)
        self.build()

    def getnext(self, mode: Mode) -> Any:
        snapshot = self.snapshot
        for role in MODE_ROLES[mode]:
            candidates = snapshot.by_role[role]
            if candidates:
                return self._choose(mode, candidates)
        raise PoolTopologyError(0, f"no instance fits mode {mode.name}: {snapshot.description}")

    def _choose(self, mode: Mode, candidates: tuple[Any, ...]) -> Any:
        return candidates[next(self._counters[mode]) % len(candidates)]

    def has(self, mode: Mode) -> bool:
        """Whether some instance fits ``mode`` now (no round-robin step taken)."""
        return any(self.snapshot.by_role[role] for role in MODE_ROLES[mode])


class LeastLoadedStrategy(RoundRobinStrategy):
    """Latency-aware: of two candidates of the role picked at random, the one with fewer
    requests in flight ("power of two choices"); candidates whose refresh round trip is far
    above the fastest's (``rtt_factor`` times, plus ``rtt_slack`` seconds) are skipped.

    Reads ``unit.in_flight`` and ``unit.rtt`` (None when unknown); opt-in with
    ``ConnectionPool(..., strategy_class=LeastLoadedStrategy)``.
    """

    rtt_factor = 3.0
    rtt_slack = 0.002  # loopback round trips jitter by a millisecond; don't flap on that

    def _choose(self, mode: Mode, candidates: tuple[Any, ...]) -> Any:
        if len(candidates) == 1:
            return candidates[0]
        rtts = [getattr(unit, "rtt", None) for unit in candidates]
        known = [rtt for rtt in rtts if rtt is not None]
        if known:
            limit = min(known) * self.rtt_factor + self.rtt_slack
            fast = tuple(unit for unit, rtt in zip(candidates, rtts) if rtt is None or rtt <= limit)
            candidates = fast or candidates
            if len(candidates) == 1:
                return candidates[0]
        first, second = random.sample(candidates, 2)
        return first if getattr(first, "in_flight", 0) <= getattr(second, "in_flight", 0) else second
