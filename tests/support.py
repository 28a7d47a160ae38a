"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import threading
from typing import Any

from tarantool_pool import Connection

READER_PREFIX = "tarantool_pool-reader"


def connect(cluster: Any, name: str = "inst1", **kwargs: Any) -> Connection:
    """A Connection to one instance of the test cluster as the test user (kwargs override)."""
    inst = cluster.instances[name]
    kwargs.setdefault("user", cluster.user)
    kwargs.setdefault("password", cluster.password)
    return Connection(inst.host, inst.port, **kwargs)


def reader_threads() -> set[threading.Thread]:
    """The connection reader threads alive now."""
    return {t for t in threading.enumerate() if t.name.startswith(READER_PREFIX)}
