"""The Prometheus exporter (tarantool_pool.prometheus) against the real replica set.

Scrapes go through a private CollectorRegistry and ``generate_latest``, parsed
with prometheus_client's own text parser; one test scrapes over HTTP from
``start_http_server``.  Waiting is on conditions (events the pool emits,
``get_stats()``), never on sleeps; nothing asserts on durations.

Without prometheus_client every test here that needs it FAILS (it is never
skipped): ``make venv`` installs the ``prometheus`` extra.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cluster import NAMES, Cluster
from support import ThreadGroup, wait_for

from tarantool_pool import ConnectionPool, DatabaseError, EventKind, Mode, PoolEvent, UnknownOutcomeError

try:
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, start_http_server
    from prometheus_client.parser import text_string_to_metric_families

    from tarantool_pool import prometheus
except ImportError as error:  # reported by the autouse fixture below, test by test
    MISSING: str | None = str(error)
else:
    MISSING = None

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "prometheus_exporter.py"
COUNTER_FIELDS = ("requests", "errors", "retries", "timeouts")
_keys = itertools.count(random.randrange(1 << 40) + (3 << 42))


@pytest.fixture(autouse=True)
def extra_installed(request: pytest.FixtureRequest) -> None:
    if MISSING is not None and not request.node.name.endswith("_in_a_fresh_interpreter"):
        pytest.fail(f"prometheus_client is missing ({MISSING}); `make venv` installs the prometheus extra, "
                    "or: pip install -e '.[test,prometheus]'", pytrace=False)


@pytest.fixture
def registry() -> Any:
    return CollectorRegistry()


@pytest.fixture
def make_pool(make_pool: Callable[..., ConnectionPool]) -> Callable[..., ConnectionPool]:
    """conftest's factory, each pool ready (a master known, every instance up) before it is handed out."""
    def make(**kwargs: Any) -> ConnectionPool:
        pool = make_pool(**kwargs)
        pool.wait(Mode.RW, timeout=30)
        wait_for(lambda: all(row["role"] != "down" for row in pool.get_stats()["instances"].values()), 30,
                 "every instance up in the pool")
        return pool

    return make


def uri(cluster: Cluster, name: str) -> str:
    return cluster.instances[name].uri


class Scrape:
    """One exposition, parsed: ``value(name, **labels)``; ``series()`` lists the tarantool_pool_ samples."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.types: dict[str, str] = {}
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    @classmethod
    def of(cls, registry: Any) -> Scrape:
        return cls(generate_latest(registry).decode())

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def series(self, **labels: str) -> list[tuple[str, dict[str, str]]]:
        wanted = set(labels.items())
        return [(name, dict(found)) for name, found in self.samples
                if name.startswith("tarantool_pool_") and wanted <= found]

    def counters(self, pool: str) -> dict[tuple[str, str], float]:
        """(instance, field) -> value of the per-instance counters of ``pool``."""
        return {(labels["instance"], field): value
                for (name, found), value in self.samples.items()
                for labels in [dict(found)]
                for field in COUNTER_FIELDS
                if name == f"tarantool_pool_{field}_total" and labels.get("pool") == pool}


class EventLog:
    """The test's own listener.  Added after ``register()``: the exporter's listener runs first, so an
    event this log has seen is already counted by the exporter."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.events: list[PoolEvent] = []
        self.cond = threading.Condition()
        pool.add_listener(self)

    def __call__(self, event: PoolEvent) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def count(self, kind: EventKind, instance: str) -> int:
        with self.cond:
            return sum(1 for event in self.events if event.kind is kind and event.instance == instance)

    def wait(self, kind: EventKind, instance: str, timeout: float = 30.0) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.count(kind, instance) > 0, timeout):
                pytest.fail(f"no {kind.value} event for {instance} within {timeout} s; saw {self.events}")


# ---------------------------------------------------------------------------------------------
# what a scrape shows


def test_scrape_shows_every_instance_with_its_role_and_state(
        cluster: Cluster, make_pool: Callable[..., ConnectionPool], registry: Any) -> None:
    pool = make_pool()
    prometheus.register(pool, registry, name="roles")
    scrape = Scrape.of(registry)

    instances = {uri(cluster, name) for name in NAMES}
    assert {labels.get("instance") for _, labels in scrape.series(pool="roles")} == {*instances, None}  # None: closed
    for name in NAMES:
        instance = uri(cluster, name)
        expected = "ro" if cluster.instances[name].read_only else "rw"
        labels = {"pool": "roles", "instance": instance}
        assert scrape.value("tarantool_pool_instance_up", **labels) == 1.0
        for role in ("rw", "ro", "down"):
            assert scrape.value("tarantool_pool_instance_role", role=role, **labels) == (role == expected), role
        assert scrape.value("tarantool_pool_refresh_rtt_seconds", **labels) > 0  # type: ignore[operator]
        assert scrape.value("tarantool_pool_refresh_age_seconds", **labels) >= 0  # type: ignore[operator]
        lag = scrape.value("tarantool_pool_replication_lag_seconds", **labels)
        # Tarantool's upstream.lag can be a hair below 0 (clocks read at both ends): only its presence here
        assert lag is not None and (lag == 0.0 if expected == "rw" else lag < 60)
        assert scrape.value("tarantool_pool_in_flight_requests", **labels) is not None
        for field in COUNTER_FIELDS:
            assert scrape.value(f"tarantool_pool_{field}_total", **labels) == 0.0, field
        for kind in EventKind:
            assert scrape.value("tarantool_pool_events_total", kind=kind.value, **labels) == 0.0, kind
    assert scrape.value("tarantool_pool_closed", pool="roles") == 0.0
    assert scrape.types["tarantool_pool_requests"] == "counter"
    assert scrape.types["tarantool_pool_instance_up"] == "gauge"


def test_counters_move_by_exactly_the_requests_made(
        cluster: Cluster, make_pool: Callable[..., ConnectionPool], registry: Any) -> None:
    pool = make_pool()
    prometheus.register(pool, registry, name="counts")
    master, replicas = uri(cluster, "inst1"), [uri(cluster, "inst2"), uri(cluster, "inst3")]
    before = Scrape.of(registry).counters("counts")

    for _ in range(7):
        pool.ping(mode=Mode.RW)
    for _ in range(6):
        pool.call("echo", 1, mode=Mode.RO)
    with pytest.raises(DatabaseError, match="boom"):  # a Lua error: an error, not retried
        pool.call("raise", "boom", mode=Mode.RW)
    with pytest.raises(UnknownOutcomeError):  # a write past its deadline: a timeout, not retried
        pool.call("sleep", 5, mode=Mode.RW, timeout=0.2)

    after = Scrape.of(registry).counters("counts")
    delta = {key: after[key] - before[key] for key in after}
    assert delta[(master, "requests")] == 9
    assert delta[(master, "errors")] == 2
    assert delta[(master, "timeouts")] == 1
    assert delta[(master, "retries")] == 0
    assert sum(delta[(replica, "requests")] for replica in replicas) == 6
    assert all(delta[(replica, field)] == 0 for replica in replicas for field in ("errors", "retries", "timeouts"))
    stats = pool.get_stats()["instances"]  # and the scrape says what get_stats() says
    assert all(after[(instance, field)] == stats[instance][field] for instance, field in after)


def test_counters_never_decrease_across_scrapes_under_load(
        make_pool: Callable[..., ConnectionPool], registry: Any) -> None:
    pool = make_pool()
    prometheus.register(pool, registry, name="load")

    class Load(ThreadGroup):
        def _run(self) -> None:
            while not self.stop.is_set():
                pool.ping(mode=Mode.ANY)

    previous = Scrape.of(registry).counters("load")
    with Load(4, "prometheus-load"):
        for _ in range(30):
            current = Scrape.of(registry).counters("load")
            assert current.keys() == previous.keys()
            went_down = {key: (previous[key], current[key]) for key in current if current[key] < previous[key]}
            assert not went_down
            previous = current
    total = sum(value for (_, field), value in previous.items() if field == "requests")
    assert total > 0


def test_in_flight_shows_a_request_the_server_holds(
        cluster: Cluster, make_pool: Callable[..., ConnectionPool], registry: Any) -> None:
    pool = make_pool()
    prometheus.register(pool, registry, name="held")
    master = uri(cluster, "inst1")
    cluster.admin("inst1", "rawset(_G, 'prometheus_test_gate', require('fiber').channel(8)); "
                           "rawset(_G, 'prometheus_test_hold', function() return prometheus_test_gate:get(30) end)")
    held = threading.Thread(target=pool.call, args=("prometheus_test_hold",), kwargs={"mode": Mode.RW, "timeout": 30})
    held.start()
    try:
        wait_for(lambda: pool.get_stats()["instances"][master]["in_flight"] >= 1, 30, "the held call in flight")
        value = Scrape.of(registry).value("tarantool_pool_in_flight_requests", pool="held", instance=master)
        assert value is not None and value >= 1
    finally:
        cluster.admin("inst1", "prometheus_test_gate:put(true)")
        held.join(30)
    assert not held.is_alive()


def test_a_real_http_scrape_of_the_default_registry(
        cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    pool = make_pool()
    with prometheus.register(pool):  # prometheus_client.REGISTRY, pool="default"
        for _ in range(5):
            pool.ping(mode=Mode.RW)
        server, thread = start_http_server(0, addr="127.0.0.1")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=30) as reply:
                assert reply.status == 200
                scrape = Scrape(reply.read().decode())
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10)
    master = uri(cluster, "inst1")
    assert scrape.value("tarantool_pool_requests_total", pool="default", instance=master) == 5.0
    for name in NAMES:
        assert scrape.value("tarantool_pool_instance_up", pool="default", instance=uri(cluster, name)) == 1.0
    assert "python_info" in scrape.text  # the default registry's own collectors are served alongside
    assert not Scrape.of(REGISTRY).series(pool="default")  # leaving the block unregistered it


# ---------------------------------------------------------------------------------------------
# failures and events


@pytest.mark.timeout(180)
def test_a_killed_instance_is_down_on_the_next_scrape_and_up_again_after_restart(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool], registry: Any) -> None:
    c = fresh_cluster
    pool = make_pool(refresh_delay=0.2)
    prometheus.register(pool, registry, name="kill")
    log = EventLog(pool)
    victim = uri(c, "inst3")
    labels = {"pool": "kill", "instance": victim}
    assert Scrape.of(registry).value("tarantool_pool_instance_up", **labels) == 1.0

    c.kill("inst3")
    log.wait(EventKind.INSTANCE_DOWN, victim)
    scrape = Scrape.of(registry)
    assert scrape.value("tarantool_pool_instance_up", **labels) == 0.0
    assert scrape.value("tarantool_pool_instance_role", role="down", **labels) == 1.0
    assert scrape.value("tarantool_pool_instance_role", role="ro", **labels) == 0.0
    assert scrape.value("tarantool_pool_events_total", kind="instance_down", **labels) == 1.0
    for other in ("inst1", "inst2"):
        assert scrape.value("tarantool_pool_instance_up", pool="kill", instance=uri(c, other)) == 1.0

    c.start("inst3")
    log.wait(EventKind.INSTANCE_UP, victim)
    scrape = Scrape.of(registry)
    assert scrape.value("tarantool_pool_instance_up", **labels) == 1.0
    assert scrape.value("tarantool_pool_instance_role", role="ro", **labels) == 1.0
    assert scrape.value("tarantool_pool_events_total", kind="instance_up", **labels) == 1.0
    # a restarting instance may be seen 'loading' (down -> down, another INSTANCE_DOWN): count what the pool emitted
    assert scrape.value("tarantool_pool_events_total", kind="instance_down", **labels) == \
        log.count(EventKind.INSTANCE_DOWN, victim)


@pytest.mark.timeout(180)
def test_a_write_refused_by_a_demoted_master_counts_a_retry_and_two_role_changes(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool], registry: Any) -> None:
    c = fresh_cluster
    pool = make_pool(refresh_delay=60, selection_timeout=30, socket_timeout=30)  # the pool learns only by the refusal
    prometheus.register(pool, registry, name="moved")
    log = EventLog(pool)
    old, new = uri(c, "inst1"), uri(c, "inst2")
    before = Scrape.of(registry)

    c.set_read_only("inst1", True)  # behind the pool's back
    c.set_read_only("inst2", False)
    pool.replace("test_int", [next(_keys), "moved", None])  # ER_READONLY on inst1, retried on inst2

    after = Scrape.of(registry)
    moved = {"pool": "moved"}
    assert after.value("tarantool_pool_events_total", kind="retry", instance=old, **moved) == 1.0
    assert after.value("tarantool_pool_events_total", kind="role_changed", instance=old, **moved) == 1.0
    assert after.value("tarantool_pool_events_total", kind="role_changed", instance=new, **moved) == 1.0
    assert log.count(EventKind.RETRY, old) == 1
    delta = {key: value - before.counters("moved")[key] for key, value in after.counters("moved").items()}
    assert delta[(old, "retries")] == 1
    assert delta[(old, "errors")] == 1
    assert delta[(old, "requests")] == 1
    assert delta[(new, "requests")] == 1
    assert after.value("tarantool_pool_instance_role", role="ro", instance=old, **moved) == 1.0
    assert after.value("tarantool_pool_instance_role", role="rw", instance=new, **moved) == 1.0


# ---------------------------------------------------------------------------------------------
# registering and unregistering


def test_two_pools_share_one_family_each_and_unregister_removes_only_their_series(
        make_pool: Callable[..., ConnectionPool], registry: Any) -> None:
    first, second = make_pool(), make_pool()
    a = prometheus.register(first, registry, name="a")
    b = prometheus.register(second, registry, name="b")
    with pytest.raises(ValueError, match="'a' is already registered"):
        prometheus.register(second, registry, name="a")

    scrape = Scrape.of(registry)
    type_lines = [line for line in scrape.text.splitlines() if line.startswith("# TYPE")]
    assert len(type_lines) == len(set(type_lines))  # one family per metric, whatever the number of pools
    assert scrape.series(pool="a") and scrape.series(pool="b")

    a.unregister()
    scrape = Scrape.of(registry)
    assert not scrape.series(pool="a")
    assert scrape.series(pool="b")
    assert not first.listeners  # its event listener is gone too
    a.unregister()  # idempotent

    b.close()
    assert not Scrape.of(registry).series()
    assert not second.listeners
    again = prometheus.register(first, registry, name="a")  # the registry has no collector left to clash with
    assert Scrape.of(registry).series(pool="a")
    again.unregister()


def test_events_after_unregister_are_not_counted(make_pool: Callable[..., ConnectionPool], registry: Any) -> None:
    pool = make_pool()
    metrics = prometheus.register(pool, registry, name="late")
    metrics.unregister()
    instance = next(iter(pool.get_stats()["instances"]))
    metrics.listener(PoolEvent(EventKind.RETRY, instance))  # a listener call racing unregister()
    read = metrics.read()
    assert read is not None and not read[1]


# ---------------------------------------------------------------------------------------------
# stats sources other than a live ConnectionPool (no server needed)


class FakePool:
    """get_stats() and listeners, with counters the test sets."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.listeners: list[Callable[[PoolEvent], None]] = []
        self.fail = False

    def get_stats(self) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("stats unavailable")
        return {"closed": False, "instances": {name: dict(row) for name, row in self.rows.items()}}

    def add_listener(self, listener: Callable[[PoolEvent], None]) -> None:
        self.listeners.append(listener)

    def remove_listener(self, listener: Callable[[PoolEvent], None]) -> None:
        self.listeners.remove(listener)

    def set(self, instance: str, requests: int) -> None:
        self.rows[instance] = {"role": "rw", "status": "HEALTHY", "in_flight": 0, "requests": requests,
                               "errors": 0, "retries": 0, "timeouts": 0, "last_refresh_age": 0.1, "rtt": 0.001,
                               "lag": 0.0, "last_error": None}


def test_a_counter_that_an_unlocked_increment_set_back_is_held_at_its_high_mark(registry: Any) -> None:
    fake = FakePool()
    prometheus.register(fake, registry, name="fake")

    def requests() -> float | None:
        return Scrape.of(registry).value("tarantool_pool_requests_total", pool="fake", instance="h:1")

    fake.set("h:1", 10)
    assert requests() == 10
    fake.set("h:1", 9)  # two threads raced on `requests += 1`: one update lost after the scrape saw it
    assert requests() == 10
    fake.set("h:1", 12)
    assert requests() == 12
    del fake.rows["h:1"]  # the instance left the pool ...
    assert requests() is None
    fake.set("h:1", 2)  # ... and came back with a new unit: a real reset
    assert requests() == 2


def test_an_asyncio_facade_is_read_through_its_sync_engine(registry: Any) -> None:
    class Facade:
        def __init__(self) -> None:
            self.sync = FakePool()

        async def get_stats(self) -> dict[str, Any]:  # pragma: no cover - never called
            raise AssertionError("the exporter must not call the coroutine")

        def add_listener(self, listener: Callable[[PoolEvent], None]) -> None:  # pragma: no cover
            raise AssertionError("listeners go to the engine")

    facade = Facade()
    facade.sync.set("h:1", 3)
    metrics = prometheus.register(facade, registry, name="aio")
    assert metrics.pool is facade.sync
    facade.sync.listeners[0](PoolEvent(EventKind.SLOW_REQUEST, "h:1"))
    scrape = Scrape.of(registry)
    assert scrape.value("tarantool_pool_requests_total", pool="aio", instance="h:1") == 3
    assert scrape.value("tarantool_pool_events_total", pool="aio", instance="h:1", kind="slow_request") == 1
    metrics.unregister()
    assert not facade.sync.listeners


def test_register_refuses_what_is_not_a_pool_and_a_bad_name(registry: Any) -> None:
    with pytest.raises(TypeError, match="get_stats"):
        prometheus.register(object(), registry)
    with pytest.raises(ValueError, match="name"):
        prometheus.register(FakePool(), registry, name="")


def test_a_pool_whose_stats_fail_is_left_out_and_the_others_still_scraped(
        registry: Any, caplog: pytest.LogCaptureFixture) -> None:
    broken, fine = FakePool(), FakePool()
    broken.set("h:1", 1)
    fine.set("h:2", 2)
    prometheus.register(broken, registry, name="broken")
    prometheus.register(fine, registry, name="fine")
    broken.fail = True
    scrape = Scrape.of(registry)
    assert not scrape.series(pool="broken")
    assert scrape.value("tarantool_pool_requests_total", pool="fine", instance="h:2") == 2
    assert "cannot read the stats of pool 'broken'" in caplog.text


# ---------------------------------------------------------------------------------------------
# the optional dependency, in fresh interpreters


def run_python(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("TARANTOOL_POOL_")}
    environ["PYTHONPATH"] = str(ROOT)
    environ.update(env or {})
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=environ,
                          cwd=ROOT, timeout=60)


IMPORT_EVERYTHING_BUT_THE_EXPORTER = """
import importlib, pkgutil, sys
import tarantool_pool
for module in pkgutil.walk_packages(tarantool_pool.__path__, "tarantool_pool."):
    if module.name not in ("tarantool_pool.prometheus", "tarantool_pool.__main__"):
        importlib.import_module(module.name)
loaded = sorted(name for name in sys.modules if name.split(".")[0] == "prometheus_client")
print("loaded:", loaded)
sys.exit(1 if loaded else 0)
"""


def test_importing_tarantool_pool_does_not_import_prometheus_client_in_a_fresh_interpreter() -> None:
    result = run_python(IMPORT_EVERYTHING_BUT_THE_EXPORTER)
    assert result.returncode == 0, result.stdout + result.stderr


BLOCK_PROMETHEUS_CLIENT = """
import sys

class Blocker:  # as if prometheus_client were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "prometheus_client":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
import tarantool_pool  # the library itself does not need it
try:
    import tarantool_pool.prometheus
except ImportError as error:
    print(f"{type(error).__name__}: {error}")
    sys.exit(0)
sys.exit(3)
"""


def test_without_prometheus_client_the_import_error_names_the_extra_in_a_fresh_interpreter() -> None:
    result = run_python(BLOCK_PROMETHEUS_CLIENT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pip install 'tarantool_pool[prometheus]'" in result.stdout
    assert result.stdout.startswith("ImportError: tarantool_pool.prometheus needs the prometheus_client package")


# ---------------------------------------------------------------------------------------------
# the example


@pytest.mark.timeout(180)
def test_the_example_serves_metrics_while_its_load_runs(cluster: Cluster, tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TARANTOOL_POOL_")}
    env.update(TARANTOOL_POOL_ADDRS=",".join(uri(cluster, name) for name in NAMES),
               TARANTOOL_POOL_USER=cluster.user, TARANTOOL_POOL_PASSWORD=cluster.password, PYTHONUNBUFFERED="1")
    stderr = tmp_path / "stderr"
    with open(stderr, "w") as errors:
        example = subprocess.Popen([sys.executable, str(EXAMPLE), "--port", "0", "--name", "example",
                                    "--seconds", "120"], stdout=subprocess.PIPE, stderr=errors, text=True, env=env,
                                   cwd=ROOT)
    try:
        assert example.stdout is not None
        first = example.stdout.readline()
        assert "/metrics" in first, first + stderr.read_text()
        url = first.split()[-1]

        def scrape() -> Scrape:
            with urllib.request.urlopen(url, timeout=30) as reply:
                return Scrape(reply.read().decode())

        def load_seen() -> bool:
            return sum(value for (_, field), value in scrape().counters("example").items() if field == "requests") > 0

        wait_for(load_seen, 60, "the example's requests in its own scrape", interval=0.1)
        live = scrape()
        for name in NAMES:
            assert live.value("tarantool_pool_instance_up", pool="example", instance=uri(cluster, name)) == 1.0
        example.send_signal(signal.SIGINT)  # it stops its load, prints a summary, exits 0
        out = example.communicate(timeout=60)[0]
    finally:
        if example.poll() is None:
            example.kill()
            example.wait()
    err = stderr.read_text()
    assert example.returncode == 0, err
    assert cluster.password not in first + out + err
    made = int(out.split("made ")[1].split()[0])
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in out.splitlines()
                  if line.startswith("tarantool_pool_requests_total{"))
    assert made > 0 and counted == made, out
