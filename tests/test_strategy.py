"""Pure tests of request routing in ``tarantool_pool.pool.strategy``.

Units are plain fakes with ``.name`` and ``.state``; no connection exists.
What they prove:

* every Mode picks only from its roles: ANY any healthy instance, RW only
  read-write, RO only read-only, PREFER_RO read-only else read-write,
  PREFER_RW read-write else read-only;
* N consecutive ``getnext`` calls in a mode visit all N healthy candidates
  of the role it uses (round robin);
* unhealthy instances (and healthy ones whose role is unknown) are never picked;
* with no candidate, ``getnext`` raises ``PoolTopologyError`` whose message
  names the mode and every instance as rw/ro/down, and ``has`` says False;
* ``update()`` picks up state changes (nothing is re-read before it);
* ``PoolTolopogyError`` (tarantool-python's spelling) is the same class.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tarantool_pool import errors
from tarantool_pool.errors import PoolTopologyError
from tarantool_pool.pool.strategy import InstanceState, Mode, RoundRobinStrategy, Status

RW = InstanceState(Status.HEALTHY, read_only=False)
RO = InstanceState(Status.HEALTHY, read_only=True)
DOWN = InstanceState(Status.UNHEALTHY, read_only=None)
DOWN_WAS_RW = InstanceState(Status.UNHEALTHY, read_only=False)
DOWN_WAS_RO = InstanceState(Status.UNHEALTHY, read_only=True)
HEALTHY_ROLE_UNKNOWN = InstanceState(Status.HEALTHY, read_only=None)


@dataclass(eq=False)
class FakeUnit:
    name: str
    state: InstanceState


def units(**states: InstanceState) -> list[FakeUnit]:
    return [FakeUnit(name, state) for name, state in states.items()]


def picks(strategy: RoundRobinStrategy, mode: Mode, count: int) -> list[str]:
    return [strategy.getnext(mode).name for _ in range(count)]


# A pool with every kind of member: 2 rw, 3 ro, and 4 that must never be picked.
MIXED = dict(rw1=RW, rw2=RW, ro1=RO, ro2=RO, ro3=RO,
             down=DOWN, down_rw=DOWN_WAS_RW, down_ro=DOWN_WAS_RO, unknown=HEALTHY_ROLE_UNKNOWN)
MIXED_RW = {"rw1", "rw2"}
MIXED_RO = {"ro1", "ro2", "ro3"}


@pytest.mark.parametrize("mode, expected", [
    (Mode.ANY, MIXED_RW | MIXED_RO),
    (Mode.RW, MIXED_RW),
    (Mode.RO, MIXED_RO),
    (Mode.PREFER_RO, MIXED_RO),
    (Mode.PREFER_RW, MIXED_RW),
])
def test_consecutive_picks_visit_exactly_the_modes_candidates(mode: Mode, expected: set[str]) -> None:
    strategy = RoundRobinStrategy(units(**MIXED))
    first_round = picks(strategy, mode, len(expected))
    assert sorted(first_round) == sorted(expected)  # N calls, N different candidates
    assert set(picks(strategy, mode, 10 * len(expected))) == expected


@pytest.mark.parametrize("mode", list(Mode))
def test_unhealthy_or_roleless_units_are_never_picked(mode: Mode) -> None:
    strategy = RoundRobinStrategy(units(**MIXED))
    never = {"down", "down_rw", "down_ro", "unknown"}
    assert never.isdisjoint(picks(strategy, mode, 50))


def test_prefer_ro_falls_back_to_rw_when_no_replica_is_healthy() -> None:
    strategy = RoundRobinStrategy(units(rw1=RW, rw2=RW, ro1=DOWN_WAS_RO))
    assert set(picks(strategy, Mode.PREFER_RO, 10)) == {"rw1", "rw2"}


def test_prefer_rw_falls_back_to_ro_when_the_master_is_down() -> None:
    strategy = RoundRobinStrategy(units(rw1=DOWN_WAS_RW, ro1=RO, ro2=RO))
    assert sorted(picks(strategy, Mode.PREFER_RW, 2)) == ["ro1", "ro2"]


def test_any_uses_replicas_and_master_alike() -> None:
    strategy = RoundRobinStrategy(units(rw1=RW, ro1=RO, ro2=DOWN))
    assert sorted(picks(strategy, Mode.ANY, 2)) == ["ro1", "rw1"]


@pytest.mark.parametrize("mode, states, roles", [
    (Mode.RW, dict(a=RO, b=DOWN), "a ro, b down"),
    (Mode.RO, dict(a=RW, b=DOWN_WAS_RO), "a rw, b down"),
    (Mode.ANY, dict(a=DOWN, b=HEALTHY_ROLE_UNKNOWN), "a down, b down"),
    (Mode.PREFER_RO, dict(a=DOWN_WAS_RW, b=DOWN_WAS_RO, c=DOWN), "a down, b down, c down"),
    (Mode.PREFER_RW, dict(a=DOWN), "a down"),
])
def test_no_candidate_raises_topology_error_naming_mode_and_instances(
        mode: Mode, states: dict[str, InstanceState], roles: str) -> None:
    strategy = RoundRobinStrategy(units(**states))
    assert strategy.has(mode) is False
    with pytest.raises(PoolTopologyError) as caught:
        strategy.getnext(mode)
    message = str(caught.value)
    assert mode.name in message
    assert roles in message


def test_empty_pool_raises_topology_error() -> None:
    strategy = RoundRobinStrategy([])
    with pytest.raises(PoolTopologyError, match="ANY"):
        strategy.getnext(Mode.ANY)


@pytest.mark.parametrize("mode, expected", [
    (Mode.ANY, True), (Mode.RW, False), (Mode.RO, True), (Mode.PREFER_RW, True), (Mode.PREFER_RO, True),
])
def test_has_tells_whether_a_mode_can_be_served(mode: Mode, expected: bool) -> None:
    strategy = RoundRobinStrategy(units(a=RO, b=DOWN_WAS_RW))
    assert strategy.has(mode) is expected


def test_update_picks_up_state_changes() -> None:
    pool = units(a=RW, b=RO)
    strategy = RoundRobinStrategy(pool)
    assert strategy.getnext(Mode.RW).name == "a"

    # failover: a goes down, b is promoted
    pool[0].state = DOWN_WAS_RW
    pool[1].state = RW
    assert strategy.getnext(Mode.RW).name == "a"  # the snapshot is only re-read by update()
    strategy.update()
    assert set(picks(strategy, Mode.RW, 5)) == {"b"}
    with pytest.raises(PoolTopologyError, match="a down, b rw"):
        strategy.getnext(Mode.RO)

    # a comes back as a replica
    pool[0].state = RO
    strategy.update()
    assert strategy.getnext(Mode.RO).name == "a"
    assert set(picks(strategy, Mode.ANY, 2)) == {"a", "b"}


def test_set_units_replaces_the_pool() -> None:
    strategy = RoundRobinStrategy(units(a=RW))
    strategy.set_units(units(c=RW, d=RW))
    assert sorted(picks(strategy, Mode.RW, 2)) == ["c", "d"]


def test_misspelled_topology_error_is_the_same_class() -> None:
    assert errors.PoolTolopogyError is PoolTopologyError
    strategy = RoundRobinStrategy(units(a=DOWN))
    with pytest.raises(errors.PoolTolopogyError):
        strategy.getnext(Mode.RW)


# -- LeastLoadedStrategy ----------------------------------------------------------------

class _LoadedUnit:
    def __init__(self, name: str, read_only: bool, in_flight: int = 0, rtt: float | None = None) -> None:
        self.name = name
        self.state = InstanceState(Status.HEALTHY, read_only)
        self.in_flight = in_flight
        self.rtt = rtt


def test_least_loaded_prefers_the_replica_with_fewer_requests_in_flight() -> None:
    from tarantool_pool.pool.strategy import LeastLoadedStrategy
    busy, idle = _LoadedUnit("busy", True, in_flight=50), _LoadedUnit("idle", True, in_flight=0)
    strategy = LeastLoadedStrategy([_LoadedUnit("master", False), busy, idle])
    picks = {strategy.getnext(Mode.RO).name for _ in range(50)}
    assert picks == {"idle"}  # of two replicas both are always sampled: the idle one wins every time


def test_least_loaded_skips_an_instance_far_slower_than_the_fastest() -> None:
    from tarantool_pool.pool.strategy import LeastLoadedStrategy
    slow = _LoadedUnit("slow", True, in_flight=0, rtt=0.5)
    fast = _LoadedUnit("fast", True, in_flight=10, rtt=0.001)
    strategy = LeastLoadedStrategy([slow, fast])
    assert {strategy.getnext(Mode.RO).name for _ in range(30)} == {"fast"}


def test_least_loaded_keeps_the_modes_fallback_and_topology_error() -> None:
    from tarantool_pool.pool.strategy import LeastLoadedStrategy
    strategy = LeastLoadedStrategy([_LoadedUnit("master", False)])
    assert strategy.getnext(Mode.PREFER_RO).name == "master"
    with pytest.raises(PoolTopologyError, match="mode RO"):
        strategy.getnext(Mode.RO)
