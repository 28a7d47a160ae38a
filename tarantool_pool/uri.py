"""Pool configuration from URI strings and from the environment (pure: no I/O at import).

A URI is ``[user[:password]@]host:port`` (``[::1]:3301`` for IPv6) or
``[user[:password]@]unix/:/path/to.sock``.  Errors are ConfigurationError and
name the URI with its password masked (``user:***@host:port``); a password
never appears in a message.

Credentials: a pool has one user and one password for every instance.  URIs
may carry them; they must then agree with each other and with ``user=`` /
``password=`` when those are given.  docs/configuration.md has the rules and
the list of ``TARANTOOL_POOL_*`` variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from .errors import ConfigurationError
from .pool.config import check_seconds

if TYPE_CHECKING:
    import tarantool_pool  # spelled out: tarantool_pool.aio has a ConnectionPool too

UNIX_HOST = "unix/"
ENV_PREFIX = "TARANTOOL_POOL_"
URI_FORMS = "[user[:password]@]host:port or [user[:password]@]unix/:/path"


@dataclass(frozen=True)
class ParsedURI:
    """One parsed URI: the ``addrs`` entry and the credentials it carried (None when absent)."""

    addr: dict[str, Any]
    user: str | None = None
    password: str | None = None


def redact(uri: str) -> str:
    """The URI with its password replaced by ``***``: safe to log or put in an error."""
    userinfo, at, location = uri.rpartition("@")
    if not at:
        return uri
    user, colon, _ = userinfo.partition(":")
    return f"{user}:***@{location}" if colon else uri


def parse_uri(uri: str) -> ParsedURI:
    """Parse ``[user[:password]@]host:port`` or ``[user[:password]@]unix/:/path``."""
    if not isinstance(uri, str):
        raise ConfigurationError(f"a URI must be a string ({URI_FORMS}), got {type(uri).__name__}")
    shown = repr(redact(uri))
    text = uri.strip()
    if not text:
        raise ConfigurationError(f"URI {shown} is empty; expected {URI_FORMS}")
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise ConfigurationError(f"URI {shown}: the scheme {scheme + '://'!r} is not supported; "
                                 f"expected {URI_FORMS}")
    userinfo, at, location = text.rpartition("@")
    user: str | None = None
    password: str | None = None
    if at:
        name, colon, secret = userinfo.partition(":")
        if not name:
            raise ConfigurationError(f"URI {shown}: the user before '@' is empty")
        user = name
        password = secret if colon else None
    if location.startswith(UNIX_HOST + ":"):
        path = location[len(UNIX_HOST) + 1:]
        if not path:
            raise ConfigurationError(f"URI {shown}: the unix socket path after 'unix/:' is empty")
        return ParsedURI({"host": UNIX_HOST, "port": path}, user, password)
    if location.startswith("["):  # [IPv6]:port
        host, bracket, rest = location[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ConfigurationError(f"URI {shown}: an IPv6 address must be written [address]:port")
        port_text = rest[1:]
    else:
        host, colon, port_text = location.rpartition(":")
        if not colon:
            raise ConfigurationError(f"URI {shown} has no port; expected {URI_FORMS}")
    if not host:
        raise ConfigurationError(f"URI {shown}: the host is empty")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigurationError(f"URI {shown}: the port must be an integer from 1 to 65535, got {port_text!r}")
    return ParsedURI({"host": host, "port": int(port_text)}, user, password)


def resolve_addrs(addrs: Any, user: str | None = None,
                  password: str | None = None) -> tuple[Any, str | None, str | None]:
    """Turn the URI strings of ``addrs`` into dicts and settle the pool's one user and password.

    Dict entries are passed on untouched (validate_addrs checks them).  Anything
    that is not a list or tuple is returned as it is, for validate_addrs to reject.
    Raises ConfigurationError when URIs disagree on the credentials, or with
    ``user=`` / ``password=``.
    """
    if isinstance(addrs, str):
        addrs = [addrs]
    if not isinstance(addrs, (list, tuple)):
        return addrs, user, password
    result: list[Any] = []
    found_user: tuple[str, str] | None = None  # (user, the URI it came from, redacted)
    found_password: tuple[str, str] | None = None
    for number, entry in enumerate(addrs):
        if not isinstance(entry, str):
            result.append(entry)
            continue
        try:
            parsed = parse_uri(entry)
        except ConfigurationError as error:
            raise ConfigurationError(f"addrs[{number}]: {error}") from None
        result.append(parsed.addr)
        where = redact(entry)
        if parsed.user is not None:
            if found_user is not None and found_user[0] != parsed.user:
                raise ConfigurationError(f"addrs[{number}]: URI {where!r} has user {parsed.user!r} but "
                                         f"{found_user[1]!r} has user {found_user[0]!r}; every instance of a "
                                         "pool must use the same credentials")
            found_user = found_user or (parsed.user, where)
        if parsed.password is not None:
            if found_password is not None and found_password[0] != parsed.password:
                raise ConfigurationError(f"addrs[{number}]: URI {where!r} and {found_password[1]!r} carry "
                                         "different passwords; every instance of a pool must use the same "
                                         "credentials")
            found_password = found_password or (parsed.password, where)
    if found_user is not None:
        if user is not None and user != found_user[0]:
            raise ConfigurationError(f"user={user!r} conflicts with user {found_user[0]!r} in URI "
                                     f"{found_user[1]!r}; give the credentials in one place")
        user = found_user[0]
    if found_password is not None:
        if password is not None and password != found_password[0]:
            raise ConfigurationError(f"password= conflicts with the password in URI {found_password[1]!r}; "
                                     "give the credentials in one place")
        password = found_password[0]
    return result, user, password


# -- the environment ----------------------------------------------------------------------

def _seconds(allow_zero: bool) -> Callable[[str, str], float]:
    def parse(variable: str, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigurationError(f"{variable} must be a number of seconds, got {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigurationError(f"{variable} must be a finite number of seconds, got {text!r}")
        check_seconds(variable, value, allow_zero=allow_zero, allow_none=False)
        return value
    return parse


def _count(variable: str, text: str) -> int:
    if not text.strip().isdigit():
        raise ConfigurationError(f"{variable} must be a non-negative integer, got {text!r}")
    return int(text)


def _flag(variable: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{variable} must be one of 1/true/yes/on or 0/false/no/off, got {text!r}")


def _text(variable: str, text: str) -> str:
    return text


def _uris(variable: str, text: str) -> list[str]:
    uris = [part.strip() for part in text.split(",") if part.strip()]
    if not uris:
        raise ConfigurationError(f"{variable} must list at least one URI ({URI_FORMS}), comma-separated")
    for uri in uris:
        try:
            parse_uri(uri)
        except ConfigurationError as error:
            raise ConfigurationError(f"{variable}: {error}") from None
    return uris


#: variable suffix -> (ConnectionPool keyword, parser).  docs/configuration.md lists them.
ENV_OPTIONS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "ADDRS": ("addrs", _uris),
    "USER": ("user", _text),
    "PASSWORD": ("password", _text),
    "SOCKET_TIMEOUT": ("socket_timeout", _seconds(False)),
    "CONNECTION_TIMEOUT": ("connection_timeout", _seconds(False)),
    "REFRESH_DELAY": ("refresh_delay", _seconds(False)),
    "REFRESH_TIMEOUT": ("refresh_timeout", _seconds(False)),
    "SELECTION_TIMEOUT": ("selection_timeout", _seconds(True)),
    "READ_ATTEMPT_TIMEOUT": ("read_attempt_timeout", _seconds(False)),
    "MAX_RETRIES": ("max_retries", _count),
    "MAX_LAG": ("max_lag", _seconds(True)),
    "SLOW_REQUEST_THRESHOLD": ("slow_request_threshold", _seconds(True)),
    "FETCH_SCHEMA": ("fetch_schema", _flag),
}


def options_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ConnectionPool keywords set by ``TARANTOOL_POOL_*`` variables (unset or empty ones are skipped).

    An unknown ``TARANTOOL_POOL_*`` variable is an error too: a typo must not pass silently.
    """
    env = os.environ if environ is None else environ
    options: dict[str, Any] = {}
    for variable in sorted(env):
        if not variable.startswith(ENV_PREFIX):
            continue
        suffix = variable[len(ENV_PREFIX):]
        if suffix not in ENV_OPTIONS:
            known = ", ".join(ENV_PREFIX + name for name in ENV_OPTIONS)
            raise ConfigurationError(f"unknown variable {variable}; known: {known}")
        text = env[variable]
        if text == "":
            continue
        keyword, parse = ENV_OPTIONS[suffix]
        options[keyword] = parse(variable, text)
    return options


def pool_from_env(environ: Mapping[str, str] | None = None, **overrides: Any) -> tarantool_pool.ConnectionPool:
    """A ConnectionPool configured by ``TARANTOOL_POOL_*`` variables; keyword ``overrides`` win."""
    from .pool import ConnectionPool

    options = {**options_from_env(environ), **overrides}
    if "addrs" not in options:
        raise ConfigurationError(f"{ENV_PREFIX}ADDRS is not set (comma-separated URIs: {URI_FORMS}) "
                                 "and no addrs= was given")
    return ConnectionPool(**options)


def uris_to_addrs(uris: Sequence[str]) -> list[dict[str, Any]]:
    """Just the ``addrs`` dicts of ``uris`` (credentials dropped)."""
    return [parse_uri(uri).addr for uri in uris]
