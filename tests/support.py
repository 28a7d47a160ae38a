"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from tarantool_pool import Connection

READER_PREFIX = "tarantool_pool-watch"  # the per-link thread (it watches for hang-ups; callers read)


def connect(cluster: Any, name: str = "inst1", **kwargs: Any) -> Connection:
    """A Connection to one instance of the test cluster as the test user (kwargs override)."""
    inst = cluster.instances[name]
    kwargs.setdefault("user", cluster.user)
    kwargs.setdefault("password", cluster.password)
    return Connection(inst.host, inst.port, **kwargs)


def reader_threads() -> set[threading.Thread]:
    """The connection reader threads alive now."""
    return {t for t in threading.enumerate() if t.name.startswith(READER_PREFIX)}


class ThreadGroup:
    """``count`` threads running ``self._run`` until ``stop`` is set; ``with`` starts them, and
    leaving the block stops and joins them, failing if one hangs past ``join_timeout``."""

    join_timeout = 30.0

    def __init__(self, count: int, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, name=f"test-{name}-{n}") for n in range(count)]

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(self.join_timeout)
        assert not any(thread.is_alive() for thread in self.threads), f"a {self.name} thread hung"


T = TypeVar("T")


def run(awaitable: Awaitable[T], timeout: float = 120.0) -> T:
    """Run ``awaitable`` in a new event loop, failing the test if it takes longer than ``timeout``."""
    async def bounded() -> T:
        return await asyncio.wait_for(awaitable, timeout)
    return asyncio.run(bounded())


async def until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.005) -> None:
    """Readiness: poll ``predicate`` (without blocking the loop) until it holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: not true within {timeout} s")
        await asyncio.sleep(interval)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.01) -> Any:
    """Readiness for a condition with no event to wait on (another process's or thread's state):
    check ``predicate`` every ``interval`` s; return its first truthy value, or fail the test
    naming ``what`` once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: not true within {timeout} s")
        time.sleep(interval)
