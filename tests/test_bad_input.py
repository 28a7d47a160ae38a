"""Bad user input is refused on the client, with an error that names the problem, and nothing is sent.

"Nothing sent" is observed, not assumed: every test wraps ``send`` of the
live link(s) and decodes each frame that goes out.  The only frames allowed
are one schema reload (SELECTs on ``_vspace`` / ``_vindex``) when a name is
unknown, and the pool's own ``box.info`` refreshes.

Covers: unknown space / index / field names (SchemaError), values msgpack
cannot pack (EncodingError), wrong pool modes, negative limit / offset, a key
of the wrong shape, malformed update operations, non-string function names,
a closed pool (PoolClosedError) and bad ``addrs`` (ConfigurationError naming
the entry and the field).
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Iterator
from typing import Any, Callable

import msgpack
import pytest

from tarantool_pool import (
    ConfigurationError,
    Connection,
    ConnectionPool,
    EncodingError,
    Mode,
    PoolClosedError,
    SchemaError,
)
from tarantool_pool import protocol as p
from tarantool_pool.schema import VINDEX_ID, VSPACE_ID
from tarantool_pool.transport import Link

pytestmark = pytest.mark.timeout(60)


# -- watching what goes out ------------------------------------------------------------------

class SendSpy:
    """Wraps ``link.send``; keeps (request type, body) of every frame the link is asked to send."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.requests: list[tuple[int, dict[Any, Any]]] = []
        self._send = link.send
        self._lock = threading.Lock()
        link.send = self  # type: ignore[method-assign]

    def __call__(self, data: bytes) -> None:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        unpacker.feed(data)
        while unpacker.tell() < len(data):
            size = unpacker.unpack()
            end = unpacker.tell() + size
            header = unpacker.unpack()
            body = unpacker.unpack() if unpacker.tell() < end else {}
            with self._lock:
                self.requests.append((header[p.KEY_CODE], body))
        self._send(data)

    def restore(self) -> None:
        self.link.send = self._send  # type: ignore[method-assign]

    def user_requests(self) -> list[tuple[int, dict[Any, Any]]]:
        """What was sent besides schema loads and the pool's box.info refreshes."""
        return [(code, body) for code, body in self.requests
                if not is_schema_select(code, body) and not is_refresh(code, body)]

    def schema_selects(self) -> int:
        return sum(1 for code, body in self.requests if is_schema_select(code, body))


def is_schema_select(code: int, body: dict[Any, Any]) -> bool:
    return code == p.SELECT and body.get(p.KEY_SPACE_ID) in (VSPACE_ID, VINDEX_ID)


def is_refresh(code: int, body: dict[Any, Any]) -> bool:
    return code in (p.CALL, p.CALL_16) and body.get(p.KEY_FUNCTION_NAME) == "box.info"


def describe(requests: list[tuple[int, dict[Any, Any]]]) -> str:
    return ", ".join(f"type {code} {body!r:.80}" for code, body in requests)


@pytest.fixture
def conn(cluster: Any) -> Iterator[Connection]:
    inst = cluster.instances["inst1"]
    connection = Connection(inst.host, inst.port, user=cluster.user, password=cluster.password)
    try:
        connection.select("test_int", 0, limit=0)  # loads the schema, so a test sees only its own frames
        yield connection
    finally:
        connection.close()


@pytest.fixture
def spy(conn: Connection) -> Iterator[SendSpy]:
    assert conn._link is not None
    watcher = SendSpy(conn._link)
    yield watcher
    watcher.restore()


def refused(error_type: type[BaseException], action: Callable[[], object], match: str,
            spy: SendSpy) -> BaseException:
    """``action`` raises ``error_type`` matching ``match`` and sends no request of its own."""
    with pytest.raises(error_type, match=match) as caught:
        action()
    sent = spy.user_requests()
    assert not sent, f"the refused request still went out: {describe(sent)}"
    return caught.value


def test_the_spy_sees_what_a_valid_request_sends(conn: Connection, spy: SendSpy) -> None:
    # Without this, "nothing was sent" could be a spy that sees nothing.
    conn.select("test_int", 1, limit=5)
    conn.ping()
    conn.call("echo", 1)
    assert [code for code, _ in spy.user_requests()] == [p.SELECT, p.PING, p.CALL]
    assert spy.user_requests()[0][1][p.KEY_LIMIT] == 5


# -- names the schema does not know ------------------------------------------------------------

UNKNOWN_SPACE: dict[str, Callable[[Connection], object]] = {
    "select": lambda c: c.select("no_such_space", 1),
    "insert": lambda c: c.insert("no_such_space", [1, "a"]),
    "replace": lambda c: c.replace("no_such_space", [1, "a"]),
    "delete": lambda c: c.delete("no_such_space", 1),
    "update": lambda c: c.update("no_such_space", 1, [("=", 1, "b")]),
    "upsert": lambda c: c.upsert("no_such_space", [1, "a"], [("=", 1, "b")]),
    "space_handle": lambda c: c.space("no_such_space").select(),
}


@pytest.mark.parametrize("method", sorted(UNKNOWN_SPACE))
def test_unknown_space_name_raises_schema_error_naming_it_and_sends_only_one_schema_reload(
        conn: Connection, spy: SendSpy, method: str) -> None:
    refused(SchemaError, lambda: UNKNOWN_SPACE[method](conn), "no space named 'no_such_space'", spy)
    assert spy.schema_selects() <= 2, "more than one schema reload (a _vspace and a _vindex select)"
    assert conn.ping(notime=True) == "Success"  # the connection is fine


UNKNOWN_INDEX: dict[str, Callable[[Connection], object]] = {
    "select": lambda c: c.select("test_int", 1, index="no_such_index"),
    "delete": lambda c: c.delete("test_int", 1, index="no_such_index"),
    "update": lambda c: c.update("test_int", 1, [("=", 2, None)], index="no_such_index"),
}


@pytest.mark.parametrize("method", sorted(UNKNOWN_INDEX))
def test_unknown_index_name_raises_schema_error_naming_index_and_space(
        conn: Connection, spy: SendSpy, method: str) -> None:
    refused(SchemaError, lambda: UNKNOWN_INDEX[method](conn),
            "no index named 'no_such_index' in space 'test_int'", spy)
    assert spy.schema_selects() <= 2


@pytest.mark.parametrize("method", ["update", "upsert"])
def test_unknown_field_name_in_an_operation_raises_schema_error_listing_the_known_fields(
        conn: Connection, spy: SendSpy, method: str) -> None:
    ops = [("=", "no_such_field", 5)]
    action = (lambda: conn.update("test_int", 1, ops)) if method == "update" else \
        (lambda: conn.upsert("test_int", [1, "a"], ops))
    error = refused(SchemaError, action, "no field named 'no_such_field' in space 'test_int'", spy)
    assert "id, name, value" in str(error)  # what the space does have
    assert spy.schema_selects() <= 2


# -- values msgpack cannot carry -----------------------------------------------------------------

class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


UNPACKABLE: dict[str, tuple[Callable[[Connection], object], str]] = {
    "object_in_a_tuple": (lambda c: c.insert("test_int", [1, "a", Opaque()]), "Opaque"),
    "object_in_a_tuple_by_space_number": (lambda c: c.replace(512, [1, "a", Opaque()]), "Opaque"),
    "set_as_a_call_argument": (lambda c: c.call("echo", [{1, 2}]), "set"),
    "function_as_an_eval_argument": (lambda c: c.eval("return ...", len), "builtin_function_or_method"),
    "object_in_a_select_key": (lambda c: c.select("test_int", [Opaque()]), "Opaque"),
    "date_in_an_update_value": (lambda c: c.update("test_int", 1, [("=", "value", dt.date(2020, 1, 1))]), "date"),
    "integer_above_uint64": (lambda c: c.call("echo", [2**64]), "out of range|too big|int"),
    "float_nan_decimal": (lambda c: c.call("echo", [__import__("decimal").Decimal("NaN")]), "NaN"),
    "sql_param": (lambda c: c.execute("SELECT ?", [Opaque()]), "Opaque"),
}


@pytest.mark.parametrize("case", sorted(UNPACKABLE))
def test_value_msgpack_cannot_pack_raises_encoding_error_naming_it_and_sends_nothing(
        conn: Connection, spy: SendSpy, case: str) -> None:
    action, named = UNPACKABLE[case]
    error = refused(EncodingError, lambda: action(conn), named, spy)
    assert isinstance(error, TypeError)  # EncodingError is also a TypeError, as msgpack's own was
    assert spy.requests == []  # not even a schema load: the schema was known
    assert conn.ping(notime=True) == "Success"


# -- arguments of the wrong shape ------------------------------------------------------------------

BAD_ARGUMENTS: dict[str, tuple[Callable[[Connection], object], str]] = {
    "negative_limit": (lambda c: c.select("test_int", limit=-1), "limit must be a non-negative integer, got -1"),
    "negative_offset": (lambda c: c.select("test_int", offset=-5), "offset must be a non-negative integer, got -5"),
    "limit_as_text": (lambda c: c.select("test_int", limit="10"), "limit must be a non-negative integer, got '10'"),
    "offset_as_bool": (lambda c: c.select("test_int", offset=True), "offset must be a non-negative integer, got True"),
    "dict_key_select": (lambda c: c.select("test_int", {"id": 1}), "key must be .* got a dict"),
    "dict_key_delete": (lambda c: c.delete("test_int", {"id": 1}), "key must be .* got a dict"),
    "dict_key_update": (lambda c: c.update("test_int", {"id": 1}, [("=", 2, 0)]), "key must be .* got a dict"),
    "missing_key_delete": (lambda c: c.delete("test_int", None), "key is required"),
    "ops_not_a_list": (lambda c: c.update("test_int", 1, "=,2,0"), "op_list must be a list of operations, got str"),
    "ops_as_a_dict": (lambda c: c.update("test_int", 1, {"=": 2}), "op_list must be a list of operations, got dict"),
    "op_too_short": (lambda c: c.update("test_int", 1, [("=", 2)]), r"\(operator, field, value...\), got \('=', 2\)"),
    "op_not_a_sequence": (lambda c: c.update("test_int", 1, [("=", 2, 0), "+"]), r"\(operator, field, value...\)"),
    "op_operator_not_text": (lambda c: c.update("test_int", 1, [(1, 2, 3)]), r"\(operator, field, value...\)"),
    "upsert_ops_flat": (lambda c: c.upsert("test_int", [1, "a"], ["=", 2, 0]), r"\(operator, field, value...\)"),
    "tuple_not_a_list": (lambda c: c.insert("test_int", "1,a"), "a tuple must be a list or tuple of field values"),
    "func_name_int": (lambda c: c.call(123), "func_name must be a non-empty string, got 123"),
    "func_name_none": (lambda c: c.call(None), "func_name must be a non-empty string, got None"),
    "func_name_empty": (lambda c: c.call(""), "func_name must be a non-empty string"),
    "func_name_bytes": (lambda c: c.call(b"echo"), "func_name must be a non-empty string, got b'echo'"),
    "eval_expr_not_text": (lambda c: c.eval(42), "expr must be a string of Lua code, got int"),
    "unknown_iterator": (lambda c: c.select("test_int", 1, iterator="SIDEWAYS"), "unknown iterator 'SIDEWAYS'"),
    "negative_iterator": (lambda c: c.select("test_int", 1, iterator=-1), "iterator must be"),
    "space_as_float": (lambda c: c.select(1.5, 1), "space must be a name or a number, got 1.5"),
    "index_as_list": (lambda c: c.select("test_int", 1, index=[0]), r"index must be a name or a number, got \[0\]"),
    "negative_timeout": (lambda c: c.ping(timeout=-1), "timeout must be a positive number"),
    "sql_params_as_text": (lambda c: c.execute("SELECT ?", "1"), "SQL params must be a list, a tuple or a dict"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGUMENTS))
def test_argument_of_the_wrong_shape_raises_value_error_naming_it_and_sends_nothing(
        conn: Connection, spy: SendSpy, case: str) -> None:
    action, message = BAD_ARGUMENTS[case]
    refused((ValueError, TypeError), lambda: action(conn), message, spy)  # type: ignore[arg-type]
    assert spy.requests == []


def test_wrong_shape_errors_are_value_errors_not_server_errors(conn: Connection, spy: SendSpy) -> None:
    for case in ("negative_limit", "dict_key_select", "ops_not_a_list", "func_name_int"):
        action, _ = BAD_ARGUMENTS[case]
        with pytest.raises(ValueError):
            action(conn)
    assert spy.requests == []


# -- the pool ------------------------------------------------------------------------------------

@pytest.fixture
def pool(cluster: Any) -> Iterator[ConnectionPool]:
    # refresh_delay is long so that the links carry only what a test sends (refreshes are filtered anyway).
    connection_pool = ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password,
                                     refresh_delay=60)
    try:
        connection_pool.wait(Mode.RW, timeout=10)
        connection_pool.wait(Mode.RO, timeout=10)
        for unit in connection_pool.pool.values():
            if not unit.conn.is_closed():
                unit.conn.select("test_int", 0, limit=0)  # schema loaded
        yield connection_pool
    finally:
        connection_pool.close()


@pytest.fixture
def pool_spies(pool: ConnectionPool) -> Iterator[list[SendSpy]]:
    spies = [SendSpy(unit.conn._link) for unit in pool.pool.values() if unit.conn._link is not None]
    assert len(spies) == len(pool.pool)
    yield spies
    for watcher in spies:
        watcher.restore()


def test_the_pool_spies_see_what_a_valid_request_sends(pool: ConnectionPool, pool_spies: list[SendSpy]) -> None:
    pool.call("echo", 1, mode=Mode.RW)
    pool.select("test_int", 1, mode=Mode.RO)
    sent = [code for watcher in pool_spies for code, _ in watcher.user_requests()]
    assert sorted(sent) == sorted([p.CALL, p.SELECT])


def pool_refused(error_type: type[BaseException], action: Callable[[], object], match: str,
                 spies: list[SendSpy]) -> BaseException:
    with pytest.raises(error_type, match=match) as caught:
        action()
    for watcher in spies:
        sent = watcher.user_requests()
        assert not sent, f"the refused request still went out: {describe(sent)}"
    return caught.value


BAD_MODES: list[Any] = ["rw", "RW", 99, 0, True, None, 2.0, Mode]


@pytest.mark.parametrize("mode", BAD_MODES, ids=repr)
def test_wrong_mode_on_the_pool_raises_value_error_naming_the_mode(pool: ConnectionPool,
                                                                   pool_spies: list[SendSpy], mode: Any) -> None:
    expected = re.escape(repr(mode)) if mode is not None else "specify 'mode'"
    pool_refused(ValueError, lambda: pool.call("echo", 1, mode=mode), expected, pool_spies)
    if mode is not None:  # reads and writes default their mode; an explicit bad one is refused too
        pool_refused(ValueError, lambda: pool.select("test_int", 1, mode=mode), expected, pool_spies)
        pool_refused(ValueError, lambda: pool.insert("test_int", [1, "a"], mode=mode), expected, pool_spies)
        pool_refused(ValueError, lambda: pool.wait(mode, timeout=0.1), expected, pool_spies)


POOL_BAD_ARGUMENTS: dict[str, tuple[Callable[[ConnectionPool], object], type[BaseException], str]] = {
    "negative_limit": (lambda pl: pl.select("test_int", limit=-1), ValueError, "limit must be a non-negative"),
    "negative_offset": (lambda pl: pl.select("test_int", offset=-1, mode=Mode.RO), ValueError,
                        "offset must be a non-negative"),
    "dict_key": (lambda pl: pl.delete("test_int", {"id": 1}), ValueError, "got a dict"),
    "bad_ops": (lambda pl: pl.update("test_int", 1, [("=",)]), ValueError, r"\(operator, field, value...\)"),
    "func_name_int": (lambda pl: pl.call(7, mode=Mode.ANY), ValueError, "func_name must be a non-empty string"),
    "unpackable": (lambda pl: pl.call("echo", [Opaque()], mode=Mode.RW), EncodingError, "Opaque"),
    "unknown_space": (lambda pl: pl.select("no_such_space", 1), SchemaError, "no space named 'no_such_space'"),
    "unknown_field": (lambda pl: pl.update("test_int", 1, [("=", "nope", 1)]), SchemaError, "no field named 'nope'"),
}


@pytest.mark.parametrize("case", sorted(POOL_BAD_ARGUMENTS))
def test_bad_arguments_through_the_pool_are_refused_without_sending_or_retrying(
        pool: ConnectionPool, pool_spies: list[SendSpy], case: str) -> None:
    action, error_type, message = POOL_BAD_ARGUMENTS[case]
    pool_refused(error_type, lambda: action(pool), message, pool_spies)
    assert sum(unit.retries for unit in pool.pool.values()) == 0, "a caller's mistake was retried"
    assert all(watcher.schema_selects() <= 2 for watcher in pool_spies)


def test_every_call_on_a_closed_pool_raises_pool_closed_error(cluster: Any) -> None:
    pool = ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password)
    pool.wait(Mode.RW, timeout=10)
    links = [unit.conn._link for unit in pool.pool.values() if unit.conn._link is not None]
    spies = [SendSpy(link) for link in links]
    pool.close()
    calls: list[Callable[[], object]] = [
        lambda: pool.call("echo", 1, mode=Mode.RW),
        lambda: pool.eval("return 1", mode=Mode.ANY),
        lambda: pool.select("test_int", 1),
        lambda: pool.insert("test_int", [1, "a"]),
        lambda: pool.replace("test_int", [1, "a"]),
        lambda: pool.update("test_int", 1, [("=", 1, "b")]),
        lambda: pool.upsert("test_int", [1, "a"], [("=", 1, "b")]),
        lambda: pool.delete("test_int", 1),
        lambda: pool.ping(mode=Mode.ANY),
        lambda: pool.execute("SELECT 1", mode=Mode.RO),
        lambda: pool.wait(Mode.RW, timeout=1),
        lambda: pool.connect(),
        lambda: pool.add({"host": "127.0.0.1", "port": 1}),
    ]
    for call in calls:
        with pytest.raises(PoolClosedError, match="closed"):
            call()
    for watcher in spies:
        assert watcher.requests == [], f"a closed pool sent {describe(watcher.requests)}"


# -- bad configuration ------------------------------------------------------------------------------

GOOD = {"host": "127.0.0.1", "port": 3301}
BAD_ADDRS: dict[str, tuple[Any, str]] = {
    "not_a_list": (3301, "addrs must be a non-empty list.*got 3301"),
    "empty": ([], "addrs must be a non-empty list"),
    "none": (None, "addrs must be a non-empty list"),
    "entry_not_a_dict": ([GOOD, 3302], r"addrs\[1\] must be a dict.*got 3302"),
    "missing_port": ([{"host": "127.0.0.1"}], r"addrs\[0\] is missing 'port'"),
    "missing_host": ([GOOD, {"port": 3302}], r"addrs\[1\] is missing 'host'"),
    "misspelt_key": ([{"host": "127.0.0.1", "port": 3301, "hots": "x"}], r"addrs\[0\] has unknown key\(s\) hots"),
    "port_as_text": ([{"host": "127.0.0.1", "port": "http"}], r"addrs\[0\]: port must be an integer .* got 'http'"),
    "port_zero": ([{"host": "127.0.0.1", "port": 0}], r"addrs\[0\]: port must be an integer from 1 to 65535"),
    "port_too_big": ([GOOD, {"host": "127.0.0.1", "port": 70000}], r"addrs\[1\]: port must be .* got 70000"),
    "port_bool": ([{"host": "127.0.0.1", "port": True}], r"addrs\[0\]: port must be .* got True"),
    "host_empty": ([{"host": "", "port": 3301}], r"addrs\[0\]: host must be a non-empty string"),
    "host_int": ([{"host": 127, "port": 3301}], r"addrs\[0\]: host must be a non-empty string .* got 127"),
    "transport": ([{"host": "127.0.0.1", "port": 3301, "transport": "tls"}],
                  r"addrs\[0\]: transport must be '' or 'ssl', got 'tls'"),
    "duplicate": ([GOOD, dict(GOOD)], r"addrs\[1\]: 127.0.0.1:3301 is listed twice"),
}


@pytest.mark.parametrize("case", sorted(BAD_ADDRS))
def test_bad_addrs_raise_configuration_error_naming_entry_and_field_before_connecting(case: str) -> None:
    addrs, message = BAD_ADDRS[case]
    threads_before = set(threading.enumerate())
    with pytest.raises(ConfigurationError, match=message):
        ConnectionPool(addrs, user="test", password="test-password")
    started = [t.name for t in set(threading.enumerate()) - threads_before if t.name.startswith("tarantool_pool")]
    assert not started, f"a pool with bad addrs started {started}"


BAD_OPTIONS: dict[str, tuple[dict[str, Any], str]] = {
    "refresh_delay_zero": ({"refresh_delay": 0}, "refresh_delay must be a positive number of seconds, got 0"),
    "socket_timeout_negative": ({"socket_timeout": -1}, "socket_timeout must be a positive number"),
    "selection_timeout_text": ({"selection_timeout": "1"}, "selection_timeout must be a non-negative number"),
    "max_retries_negative": ({"max_retries": -1}, "max_retries must be a non-negative integer, got -1"),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_bad_pool_options_raise_configuration_error_naming_the_option(case: str) -> None:
    options, message = BAD_OPTIONS[case]
    with pytest.raises(ConfigurationError, match=message):
        ConnectionPool([GOOD], **options)


def test_adding_a_bad_addr_to_a_running_pool_names_the_field(pool: ConnectionPool,
                                                             pool_spies: list[SendSpy]) -> None:
    before = set(pool.pool)
    pool_refused(ConfigurationError, lambda: pool.add({"host": "127.0.0.1", "port": "x"}),
                 r"addrs\[0\]: port must be an integer", pool_spies)
    assert set(pool.pool) == before


@pytest.mark.parametrize(("options", "message"), [
    ({"encoding": "latin-1"}, "encoding must be 'utf-8' or None"),
    ({"transport": "tls"}, "transport must be '' or 'ssl'"),
    ({"auth_type": "plain"}, "auth_type must be 'chap-sha1' or 'pap-sha256'"),
    ({"auth_type": "pap-sha256"}, "needs transport='ssl'"),
    ({"connection_timeout": 0}, "connection_timeout must be a positive number"),
])
def test_bad_connection_options_raise_configuration_error_before_connecting(options: dict[str, Any],
                                                                            message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Connection("127.0.0.1", 1, **options)  # port 1: a connect attempt would fail differently
