"""URIs and TARANTOOL_POOL_* variables as pool configuration (tarantool_pool/uri.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tarantool_pool import ConfigurationError, ConnectionPool, Mode, parse_uri, pool_from_env
from tarantool_pool.uri import options_from_env, redact, resolve_addrs


def test_host_port() -> None:
    parsed = parse_uri("db.example:3301")
    assert parsed.addr == {"host": "db.example", "port": 3301}
    assert parsed.user is None and parsed.password is None


def test_user_password_host_port() -> None:
    parsed = parse_uri("admin:s:e@cret@10.0.0.1:3302")
    assert parsed.addr == {"host": "10.0.0.1", "port": 3302}
    assert (parsed.user, parsed.password) == ("admin", "s:e@cret")


def test_user_without_password() -> None:
    parsed = parse_uri("guest@localhost:3301")
    assert (parsed.user, parsed.password) == ("guest", None)


def test_unix_socket_and_ipv6() -> None:
    assert parse_uri("unix/:/run/tarantool/a.sock").addr == {"host": "unix/", "port": "/run/tarantool/a.sock"}
    assert parse_uri("u:p@unix/:/tmp/b.sock").user == "u"
    assert parse_uri("[::1]:3301").addr == {"host": "::1", "port": 3301}


@pytest.mark.parametrize("uri, fragment", [
    ("", "is empty"),
    ("localhost", "has no port"),
    ("localhost:0", "port must be an integer from 1 to 65535"),
    ("localhost:70000", "port must be an integer from 1 to 65535"),
    ("localhost:abc", "got 'abc'"),
    (":3301", "the host is empty"),
    ("@host:3301", "the user before '@' is empty"),
    ("unix/:", "unix socket path"),
    ("tcp://host:3301", "scheme 'tcp://' is not supported"),
    ("[::1]3301", "IPv6"),
])
def test_bad_uris_name_the_uri_and_the_problem(uri: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match="URI") as caught:
        parse_uri(uri)
    assert fragment in str(caught.value)
    assert repr(uri) in str(caught.value)


def test_errors_never_echo_the_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_uri("admin:hunter2@host:port")
    message = str(caught.value)
    assert "hunter2" not in message and "admin:***@host:port" in message
    assert redact("admin:hunter2@h:1") == "admin:***@h:1"
    assert redact("h:1") == "h:1"


def test_non_string_uri() -> None:
    with pytest.raises(ConfigurationError, match="must be a string"):
        parse_uri(3301)  # type: ignore[arg-type]


def test_resolve_mixes_uris_and_dicts() -> None:
    addrs, user, password = resolve_addrs(["u:p@a:1", {"host": "b", "port": 2}, "c:3"])
    assert addrs == [{"host": "a", "port": 1}, {"host": "b", "port": 2}, {"host": "c", "port": 3}]
    assert (user, password) == ("u", "p")


def test_resolve_keeps_explicit_credentials_that_agree() -> None:
    assert resolve_addrs(["u:p@a:1"], "u", "p")[1:] == ("u", "p")
    assert resolve_addrs(["a:1"], "x", "y")[1:] == ("x", "y")
    assert resolve_addrs(["u@a:1", "u:p@b:2"])[1:] == ("u", "p")


@pytest.mark.parametrize("addrs, user, password, fragment", [
    (["u:p@a:1", "v:p@b:2"], None, None, "has user 'v'"),
    (["u:p@a:1", "u:q@b:2"], None, None, "different passwords"),
    (["u:p@a:1"], "other", None, "user='other' conflicts"),
    (["u:p@a:1"], None, "other-secret", "password= conflicts"),
])
def test_conflicting_credentials(addrs: list[Any], user: str | None, password: str | None, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        resolve_addrs(addrs, user, password)
    message = str(caught.value)
    assert fragment in message
    assert ":p@" not in message and ":q@" not in message and "other-secret" not in message


def test_pool_names_the_bad_entry() -> None:
    with pytest.raises(ConfigurationError, match=r"addrs\[1\]: URI 'u:\*\*\*@b:x'"):
        ConnectionPool(["a:1", "u:pw@b:x"], connect_now=False)
    with pytest.raises(ConfigurationError, match=r"addrs\[1\]: a:1 is listed twice"):
        ConnectionPool(["a:1", {"host": "a", "port": 1}], connect_now=False)


def test_options_from_env() -> None:
    environ = {
        "TARANTOOL_POOL_ADDRS": "u:p@a:1, b:2,",
        "TARANTOOL_POOL_USER": "u",
        "TARANTOOL_POOL_SOCKET_TIMEOUT": "2.5",
        "TARANTOOL_POOL_SELECTION_TIMEOUT": "0",
        "TARANTOOL_POOL_MAX_RETRIES": "5",
        "TARANTOOL_POOL_FETCH_SCHEMA": "no",
        "TARANTOOL_POOL_MAX_LAG": "",  # empty: unset
        "HOME": "/ignored",
    }
    assert options_from_env(environ) == {
        "addrs": ["u:p@a:1", "b:2"], "user": "u", "socket_timeout": 2.5, "selection_timeout": 0.0,
        "max_retries": 5, "fetch_schema": False,
    }


@pytest.mark.parametrize("variable, value, fragment", [
    ("TARANTOOL_POOL_SOCKET_TIMEOUT", "abc", "must be a number of seconds"),
    ("TARANTOOL_POOL_SOCKET_TIMEOUT", "0", "must be a positive number"),
    ("TARANTOOL_POOL_REFRESH_DELAY", "-1", "must be a positive number"),
    ("TARANTOOL_POOL_REFRESH_DELAY", "nan", "finite"),
    ("TARANTOOL_POOL_MAX_RETRIES", "1.5", "non-negative integer"),
    ("TARANTOOL_POOL_FETCH_SCHEMA", "maybe", "1/true/yes/on"),
    ("TARANTOOL_POOL_ADDRS", " , ", "at least one URI"),
    ("TARANTOOL_POOL_ADDRS", "a:1,b", "has no port"),
    ("TARANTOOL_POOL_SOCKET_TIMOUT", "1", "unknown variable"),
])
def test_bad_env_values_name_the_variable(variable: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        options_from_env({variable: value})
    assert variable in str(caught.value) and fragment in str(caught.value)


def test_pool_from_env_needs_addrs() -> None:
    with pytest.raises(ConfigurationError, match="TARANTOOL_POOL_ADDRS is not set"):
        pool_from_env({})


def test_pool_from_env_overrides_win() -> None:
    pool = pool_from_env({"TARANTOOL_POOL_ADDRS": "a:1", "TARANTOOL_POOL_REFRESH_DELAY": "5"},
                         connect_now=False, refresh_delay=0.5)
    assert list(pool.pool) == ["a:1"] and pool.refresh_delay == 0.5
    pool.close()


def _uris(cluster: Any, credentials: str = "") -> list[str]:
    return [f"{credentials}{addr['host']}:{addr['port']}" for addr in cluster.addrs()]


def test_real_pool_from_uris(cluster: Any) -> None:
    uris = _uris(cluster, f"{cluster.user}:{cluster.password}@")
    with ConnectionPool([uris[0], *cluster.addrs()[1:]]) as pool:
        assert pool.user == cluster.user
        assert pool.call("whoami", mode=Mode.RW)[0]["name"] == "inst1"
        assert {pool.call("whoami", mode=Mode.RO)[0]["name"] for _ in range(4)} <= {"inst2", "inst3"}


def test_real_pool_from_env(cluster: Any) -> None:
    environ = {"TARANTOOL_POOL_ADDRS": ",".join(_uris(cluster)), "TARANTOOL_POOL_USER": cluster.user,
               "TARANTOOL_POOL_PASSWORD": cluster.password, "TARANTOOL_POOL_REFRESH_DELAY": "0.2"}
    with pool_from_env(environ) as pool:
        assert pool.refresh_delay == 0.2
        assert pool.call("whoami", mode=Mode.RW)[0]["name"] == "inst1"
