"""Pool configuration checks: pure functions whose errors name the entry and the field."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigurationError
from .strategy import Mode

ADDR_KEYS = frozenset({"host", "port", "transport", "ssl_key_file", "ssl_cert_file", "ssl_ca_file",
                       "ssl_ciphers", "ssl_password", "ssl_password_file", "auth_type"})


def check_seconds(name: str, value: Any, allow_zero: bool = False, allow_none: bool = True) -> None:
    """A duration option: a non-negative (or positive) number of seconds, or None when allowed."""
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        kind = "a non-negative" if allow_zero else "a positive"
        raise ConfigurationError(f"{name} must be {kind} number of seconds, got {value!r}")


def check_mode(mode: Any) -> Mode:
    """A Mode (or its number); anything else is a ValueError that names it."""
    if isinstance(mode, Mode):
        return mode
    if isinstance(mode, int) and not isinstance(mode, bool):
        try:
            return Mode(mode)
        except ValueError:
            pass
    raise ValueError(f"mode must be a tarantool_pool.Mode ({', '.join(m.name for m in Mode)}), got {mode!r}")


def validate_addrs(addrs: Any) -> list[dict[str, Any]]:
    """Check the ``addrs`` list; errors name the entry and the field."""
    if not isinstance(addrs, (list, tuple)) or not addrs:
        raise ConfigurationError("addrs must be a non-empty list of {'host': ..., 'port': ...} dicts, "
                                 f"got {addrs!r:.80}")
    seen: set[str] = set()
    result = []
    for number, addr in enumerate(addrs):
        where = f"addrs[{number}]"
        if not isinstance(addr, dict):
            raise ConfigurationError(f"{where} must be a dict with 'host' and 'port', got {addr!r:.80}")
        unknown = set(addr) - ADDR_KEYS
        if unknown:
            raise ConfigurationError(f"{where} has unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                                     f"known: {', '.join(sorted(ADDR_KEYS))}")
        for key in ("host", "port"):
            if key not in addr:
                raise ConfigurationError(f"{where} is missing {key!r}")
        host, port = addr["host"], addr["port"]
        if host is not None and (not isinstance(host, str) or not host):
            raise ConfigurationError(f"{where}: host must be a non-empty string (or None for a unix socket), "
                                     f"got {host!r}")
        if host not in (None, "unix/"):
            if isinstance(port, str) and port.isdigit():
                port = int(port)
            if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
                raise ConfigurationError(f"{where}: port must be an integer from 1 to 65535, got {addr['port']!r}")
        transport = addr.get("transport", "")
        if transport not in ("", "ssl"):
            raise ConfigurationError(f"{where}: transport must be '' or 'ssl', got {transport!r}")
        name = f"{host}:{port}"
        if name in seen:
            raise ConfigurationError(f"{where}: {name} is listed twice")
        seen.add(name)
        result.append({**addr, "port": port})
    return result
