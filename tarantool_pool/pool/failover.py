"""Failover rules: what may be retried, how, and who hears about it.

Rules:
- A request that certainly never reached a server (no connection, refused,
  failed before the write: ``NetworkError.request_sent is False``), or that a
  server refused without executing it (read-only, still loading), is retried
  on another suitable instance, reads and writes alike.
- A read (select, ping, crud reads, anything marked ``idempotent=True``) is
  also retried after a network error or a timeout.
- A write whose outcome is unknown (sent, then the connection died or the
  deadline passed, or a synchronous write that timed out waiting for its
  quorum or was rolled back) is NEVER retried: it becomes
  ``UnknownOutcomeError``.
- Retries wait with exponential backoff and jitter (tenacity), always within
  the request's own deadline; each is counted and logged.
- Listeners get :class:`PoolEvent`s (role changed, instance up/down, retry,
  slow request); a failing listener is logged, never propagated.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import tenacity

from ..errors import (
    DatabaseError,
    LoadingError,
    NetworkError,
    ReadOnlyError,
    RequestTimeoutError,
    SyncQuorumTimeoutError,
    SyncRollbackError,
    UnknownOutcomeError,
    UnknownOutcomeTimeoutError,
)

log = logging.getLogger("tarantool_pool")

BACKOFF_FIRST = 0.005  # seconds before the second retry; doubles each time
BACKOFF_MAX = 0.25
BACKOFF_JITTER = 0.01


class Verdict(enum.Enum):
    RETRY = 1  # safe: try again (on another instance)
    UNKNOWN_OUTCOME = 2  # a write that may have been applied: never retry
    RAISE = 3  # not a failover matter (bad request, constraint, ...): raise as it is


def classify(error: BaseException, is_read: bool) -> Verdict:
    """The failover verdict for one failed attempt."""
    if isinstance(error, (ReadOnlyError, LoadingError)):
        return Verdict.RETRY  # refused before execution: nothing was applied
    if isinstance(error, (SyncQuorumTimeoutError, SyncRollbackError)):
        # A synchronous write the old master rolled back can still be committed by a promoted
        # replica's clear_synchro_queue() (seen on 2.6 in the chaos test): its outcome is unknown.
        return Verdict.RAISE if is_read else Verdict.UNKNOWN_OUTCOME
    if isinstance(error, NetworkError):
        if error.request_sent is False or is_read:
            return Verdict.RETRY
        return Verdict.UNKNOWN_OUTCOME
    return Verdict.RAISE


def unknown_outcome(error: DatabaseError, where: str) -> UnknownOutcomeError:
    """Wrap a failure of a sent write: it may or may not have been applied."""
    kind = UnknownOutcomeTimeoutError if isinstance(error, RequestTimeoutError) else UnknownOutcomeError
    wrapped = kind(error.code, f"{where}: the outcome of the write is unknown "
                               f"(it may or may not have been applied): {error.message}")
    wrapped.__cause__ = error
    return wrapped


def retrying(deadline: float, max_attempts: int, is_read: bool,
             before_sleep: Callable[[tenacity.RetryCallState], None]) -> tenacity.Retrying:
    """A tenacity loop bounded by ``deadline`` (monotonic) and ``max_attempts``."""

    def out_of_time(state: tenacity.RetryCallState) -> bool:
        return state.attempt_number >= max_attempts or time.monotonic() >= deadline

    def wait(state: tenacity.RetryCallState) -> float:
        backoff = min(BACKOFF_FIRST * 2 ** (state.attempt_number - 1), BACKOFF_MAX) + random.uniform(0, BACKOFF_JITTER)
        return float(max(min(backoff, deadline - time.monotonic()), 0.0))

    return tenacity.Retrying(
        stop=out_of_time,
        wait=wait,
        retry=tenacity.retry_if_exception(lambda error: classify(error, is_read) is Verdict.RETRY),
        before_sleep=before_sleep,
        reraise=True,
    )


class EventKind(enum.Enum):
    ROLE_CHANGED = "role_changed"
    INSTANCE_DOWN = "instance_down"
    INSTANCE_UP = "instance_up"
    RETRY = "retry"
    SLOW_REQUEST = "slow_request"
    UNKNOWN_OUTCOME = "unknown_outcome"  # a sent write failed: it may or may not have been applied


@dataclass(frozen=True)
class PoolEvent:
    """Something a metrics exporter or an operator may want to know."""

    kind: EventKind
    instance: str
    detail: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)


Listener = Callable[[PoolEvent], None]


class Listeners:
    """A copy-on-write list of listeners: emitting takes no lock."""

    def __init__(self) -> None:
        self._listeners: tuple[Listener, ...] = ()

    def add(self, listener: Listener) -> None:
        self._listeners = (*self._listeners, listener)

    def remove(self, listener: Listener) -> None:
        self._listeners = tuple(known for known in self._listeners if known is not listener)

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def emit(self, kind: EventKind, instance: str, **detail: Any) -> None:
        if not self._listeners:
            return
        event = PoolEvent(kind, instance, detail)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a metrics hook must never break a request
                log.exception("pool event listener %r failed on %s", listener, kind.value)
