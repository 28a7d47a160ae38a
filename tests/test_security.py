"""Credentials: refused logins say why (the server's words), and passwords never leak.

* A wrong user or a wrong password raises an ``AuthenticationError``
  subclass carrying the server's message, from a Connection, and marks every
  member of a pool UNHEALTHY with that message as its ``last_error``.
* The password appears nowhere a program or an operator would see it: not in
  an exception (str, repr, args, the formatted traceback with its causes),
  not in any log line of the ``tarantool_pool`` logger at DEBUG (failed and
  successful connects, a whole pool run), not in the repr of Connection,
  ConnectionPool or PoolUnit, not in a pool's stats or events.
* A user without the right to call ``box.info`` (``limited``) can log in,
  but a pool with it reports each instance UNHEALTHY with a last_error that
  names the missing grant.

TLS is tested in tests/test_tls.py.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

from tarantool_pool import (
    AccessDeniedError,
    AuthenticationError,
    Connection,
    ConnectionPool,
    Mode,
    NoSuchUserError,
    PasswordMismatchError,
    PoolTopologyError,
    Status,
)

pytestmark = pytest.mark.timeout(90)

WRONG_PASSWORD = "Wr0ng-Pa55word-Do-Not-Log"
LIMITED_USER, LIMITED_PASSWORD = "limited", "limited-password"


@pytest.fixture
def library_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything the library logs, at DEBUG, with exception text (caplog.text includes it)."""
    caplog.set_level(logging.DEBUG, logger="tarantool_pool")
    yield caplog


def exception_texts(error: BaseException) -> list[str]:
    """Every way an exception is usually shown: str, repr, args, and the traceback with its causes."""
    texts = [str(error), repr(error), repr(error.args)]
    texts.append("".join(traceback.format_exception(type(error), error, error.__traceback__)))
    cause = error.__cause__ or error.__context__
    while cause is not None:
        texts += [str(cause), repr(cause), repr(cause.args)]
        cause = cause.__cause__ or cause.__context__
    return texts


def assert_secret_absent(secret: str, texts: list[str], where: str) -> None:
    for text in texts:
        assert secret not in text, f"the password appears in {where}: {text[:300]!r}"


def log_texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    assert caplog.records, "nothing was logged: the log check would prove nothing"
    return [caplog.text] + [record.getMessage() for record in caplog.records] + \
        [repr(record.args) for record in caplog.records]


def connect(cluster: Any, user: str, password: str, name: str = "inst1", **kwargs: Any) -> Connection:
    inst = cluster.instances[name]
    return Connection(inst.host, inst.port, user=user, password=password, reconnect_max_attempts=0, **kwargs)


# -- refused logins ------------------------------------------------------------------------------

def test_wrong_password_raises_password_mismatch_with_the_servers_message(
        cluster: Any, library_log: pytest.LogCaptureFixture) -> None:
    with pytest.raises(PasswordMismatchError) as caught:
        connect(cluster, cluster.user, WRONG_PASSWORD)
    error = caught.value
    assert isinstance(error, AuthenticationError)
    assert error.code == 47
    assert error.message == f"Incorrect password supplied for user '{cluster.user}'"
    assert_secret_absent(WRONG_PASSWORD, exception_texts(error), "the exception")
    if library_log.records:
        assert_secret_absent(WRONG_PASSWORD, log_texts(library_log), "the log")


def test_unknown_user_raises_no_such_user_with_the_servers_message(cluster: Any) -> None:
    with pytest.raises(NoSuchUserError) as caught:
        connect(cluster, "nobody_here", WRONG_PASSWORD)
    assert isinstance(caught.value, AuthenticationError)
    assert caught.value.code == 45
    assert "User 'nobody_here' is not found" in str(caught.value)
    assert_secret_absent(WRONG_PASSWORD, exception_texts(caught.value), "the exception")


def test_reauthenticating_with_a_wrong_password_fails_and_keeps_the_old_identity(cluster: Any) -> None:
    conn = connect(cluster, cluster.user, cluster.password)
    try:
        with pytest.raises(PasswordMismatchError) as caught:
            conn.authenticate(cluster.user, WRONG_PASSWORD)
        assert_secret_absent(WRONG_PASSWORD, exception_texts(caught.value), "the exception")
        assert conn.password == cluster.password  # the refused password was not adopted
        assert_secret_absent(WRONG_PASSWORD, [repr(conn)], "the connection's repr")
    finally:
        conn.close()


def test_a_refused_lazy_connection_raises_on_its_first_request_without_the_password(cluster: Any) -> None:
    conn = connect(cluster, cluster.user, WRONG_PASSWORD, connect_now=False)
    try:
        with pytest.raises(AuthenticationError) as caught:
            conn.ping()
        assert "Incorrect password" in str(caught.value)
        assert_secret_absent(WRONG_PASSWORD, exception_texts(caught.value) + [repr(conn)], "the error or repr")
    finally:
        conn.close()


def test_pool_with_a_wrong_password_marks_every_member_unhealthy_with_the_servers_message(
        cluster: Any, library_log: pytest.LogCaptureFixture) -> None:
    pool = ConnectionPool(cluster.addrs(), user=cluster.user, password=WRONG_PASSWORD, connection_timeout=2,
                          selection_timeout=0.2)
    try:
        for name, unit in pool.pool.items():
            assert unit.first_refresh_done.wait(timeout=5), name
            assert unit.state.status is Status.UNHEALTHY, name
            assert unit.last_error is not None
            assert "PasswordMismatchError" in unit.last_error, unit.last_error
            assert f"Incorrect password supplied for user '{cluster.user}'" in unit.last_error
        with pytest.raises(PoolTopologyError) as caught:
            pool.call("echo", 1, mode=Mode.ANY)
        texts = exception_texts(caught.value) + [repr(pool), pool.describe(), repr(pool.get_stats())]
        texts += [repr(unit) for unit in pool.pool.values()]
        texts += [unit.last_error or "" for unit in pool.pool.values()]
        assert_secret_absent(WRONG_PASSWORD, texts, "the pool's error, repr or stats")
    finally:
        pool.close()
    assert_secret_absent(WRONG_PASSWORD, log_texts(library_log), "the log")


# -- the password never leaks where things are shown ------------------------------------------------

def test_password_is_not_in_the_log_of_a_successful_connect_and_requests(
        cluster: Any, library_log: pytest.LogCaptureFixture) -> None:
    conn = connect(cluster, cluster.user, cluster.password)
    try:
        conn.select("test_int", 0)
        conn.authenticate(cluster.user, cluster.password)  # re-authentication is logged like a connect
        texts = [repr(conn), str(conn)]
    finally:
        conn.close()
    texts += log_texts(library_log)
    assert_secret_absent(cluster.password, texts, "the log or the connection's repr")


def test_password_is_not_in_reprs_or_logs_of_a_whole_pool_run(cluster: Any,
                                                               library_log: pytest.LogCaptureFixture) -> None:
    events: list[Any] = []
    pool = ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password, refresh_delay=0.2)
    pool.add_listener(events.append)
    try:
        pool.wait(Mode.RW, timeout=10)
        pool.wait(Mode.RO, timeout=10)
        pool.call("echo", 1, mode=Mode.RW)
        pool.select("test_int", 0, mode=Mode.RO)
        with pytest.raises(Exception) as caught:  # a failing request, so that an error is logged too
            pool.call("raise", "boom", mode=Mode.RW)
        texts = exception_texts(caught.value)
        texts += [repr(pool), pool.describe(), repr(pool.get_stats())]
        for unit in pool.pool.values():
            texts += [repr(unit), repr(unit.conn), repr(unit.addr), unit.last_error or ""]
    finally:
        pool.close()
    texts += [repr(event) for event in events] + log_texts(library_log)
    assert_secret_absent(cluster.password, texts, "a pool's repr, stats, events or log")


def test_the_replication_password_is_not_exposed_through_box_info(cluster: Any) -> None:
    # The pool keeps box.info (unit.info) and reads peers from it: the server masks the password there.
    pool = ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password)
    try:
        pool.wait(Mode.RO, timeout=10)
        infos = [repr(unit.info) for unit in pool.pool.values()]
    finally:
        pool.close()
    assert any("replicator@" in info for info in infos), "box.info has no replication peers to check"
    assert_secret_absent("replicator-password", infos, "box.info as the pool keeps it")


# -- a user without the rights the pool needs ------------------------------------------------

def test_limited_user_can_log_in_but_box_info_is_denied_with_the_servers_message(cluster: Any) -> None:
    conn = connect(cluster, LIMITED_USER, LIMITED_PASSWORD)
    try:
        assert conn.ping(notime=True) == "Success"
        with pytest.raises(AccessDeniedError) as caught:
            conn.call("box.info")
        assert "Execute access to function 'box.info' is denied for user 'limited'" in str(caught.value)
    finally:
        conn.close()


def test_pool_with_a_user_lacking_box_info_rights_says_which_grant_is_missing(
        cluster: Any, library_log: pytest.LogCaptureFixture) -> None:
    pool = ConnectionPool(cluster.addrs(), user=LIMITED_USER, password=LIMITED_PASSWORD, connection_timeout=2,
                          selection_timeout=0.2)
    try:
        for name, unit in pool.pool.items():
            assert unit.first_refresh_done.wait(timeout=5), name
            assert unit.state.status is Status.UNHEALTHY, name
            error = unit.last_error or ""
            assert "AccessDeniedError" in error, error
            assert "box.info" in error and "denied for user 'limited'" in error, error
            assert "grant the pool's user execute on box.info" in error, error  # the fix, spelled out
        with pytest.raises(PoolTopologyError):
            pool.call("echo", 1, mode=Mode.ANY)
    finally:
        pool.close()
    assert_secret_absent(LIMITED_PASSWORD, log_texts(library_log), "the log")


# -- the TLS key's pass phrase is a password too ------------------------------------------------

def test_ssl_key_password_is_not_in_the_repr_of_tls_options_connection_pool_or_unit() -> None:
    # No handshake needed (tests/test_tls.py does those): nothing here connects.
    secret = "Key-Pass-Phrase-Do-Not-Show"
    conn = Connection("127.0.0.1", 1, user="test", password="x", transport="ssl", ssl_password=secret,
                      connect_now=False)
    pool = ConnectionPool([{"host": "127.0.0.1", "port": 1, "transport": "ssl", "ssl_password": secret}],
                          user="test", password="x", connect_now=False)
    try:
        texts = [repr(conn), repr(conn.tls), str(conn.tls), repr(pool), pool.describe()]
        for unit in pool.pool.values():
            texts += [repr(unit), repr(unit.conn), repr(unit.conn.tls)]
        assert_secret_absent(secret, texts, "a repr")
    finally:
        conn.close()
        pool.close()
