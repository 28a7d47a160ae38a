"""The whole exception tree of tarantool_pool, and nothing else.

Rule: every exception the library raises is defined here.  Server errors are
mapped from their IPROTO error code to a class through ``DatabaseError``'s
``__init_subclass__(code=...)`` registry, so users can ``except ReadOnlyError``
instead of comparing numbers.  Names that code written for tarantool-python
imports (``NetworkError``, ``PoolTolopogyError``, ...) exist too; misspelled
ones only as aliases.
"""

from __future__ import annotations

from typing import Any, ClassVar


class Error(Exception):
    """Base class of every error raised by tarantool_pool."""


class Warning(Exception):  # noqa: A001 - the DB-API name, kept for compatibility
    """Base class of the library's warning classes (DB-API name)."""


class NetworkWarning(UserWarning):
    """A network problem that did not fail a request (compatibility name)."""


class ClusterConnectWarning(UserWarning):
    """A pool member could not be connected (compatibility name)."""


class PoolTopologyWarning(UserWarning):
    """The pool's topology is not what a mode needs (compatibility name)."""


PoolTolopogyWarning = PoolTopologyWarning


class InterfaceError(Error):
    """The library was used wrongly: bad arguments, a closed object, ..."""


class ConfigurationError(InterfaceError):
    """Bad configuration, detected before anything is sent."""


class EncodingError(InterfaceError, TypeError):
    """A request argument cannot be sent (msgpack cannot pack it); nothing was sent."""


class DatabaseError(Error):
    """An error reported by the server, or met while talking to it.

    ``code`` is the server's error code (0 when the error is client-side),
    ``message`` its text and ``extra_info`` the decoded MP_ERROR stack
    (a list of :class:`tarantool_pool.ErrorInfo`, newest first).
    """

    by_code: ClassVar[dict[int, type[DatabaseError]]] = {}
    server_code: ClassVar[int | None] = None

    def __init_subclass__(cls, code: int | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.server_code = code
            DatabaseError.by_code.setdefault(code, cls)

    def __init__(self, code: int = 0, message: str = "", extra_info: Any = None) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.extra_info = extra_info

    def __str__(self) -> str:
        if self.code:
            return f"({self.code}) {self.message}"
        return self.message

    @classmethod
    def from_server(cls, code: int, message: str, extra_info: Any = None) -> DatabaseError:
        """Build the most specific class registered for a server error code."""
        error_class = DatabaseError.by_code.get(code, DatabaseError)
        return error_class(code, message, extra_info)


# DB-API 2.0 categories, for code that catches them.
class DataError(DatabaseError):
    """DB-API category: a problem with the processed data."""


class OperationalError(DatabaseError):
    """DB-API category: a problem in the database's operation."""


class IntegrityError(DatabaseError):
    """DB-API category: relational integrity is affected."""


class InternalError(DatabaseError):
    """DB-API category: the database hit an internal error."""


class ProgrammingError(DatabaseError):
    """DB-API category: a programming error (bad space, bad SQL, ...)."""


class NotSupportedError(DatabaseError):
    """DB-API category: the operation is not supported."""


# Server error codes users catch (numbers from Tarantool's errcode.h).
class IllegalParamsError(ProgrammingError, code=1):
    """ER_ILLEGAL_PARAMS: illegal parameters (a bad iterator, ...)."""


class DuplicateKeyError(IntegrityError, code=3):
    """ER_TUPLE_FOUND: a duplicate key exists in a unique index."""


class ReadOnlyError(OperationalError, code=7):
    """ER_READONLY: a write reached a read-only instance."""


class NonMasterError(ReadOnlyError, code=6):
    """ER_NONMASTER: a write reached a replica (older servers)."""


class ProcLuaError(DatabaseError, code=32):
    """ER_PROC_LUA: the called Lua code raised an error."""


class NoSuchProcedureError(ProgrammingError, code=33):
    """ER_NO_SUCH_PROC: the called function is not defined."""


class NoSuchIndexError(ProgrammingError, code=35):
    """ER_NO_SUCH_INDEX_ID: the index does not exist."""


class NoSuchSpaceError(ProgrammingError, code=36):
    """ER_NO_SUCH_SPACE: the space does not exist."""


class AccessDeniedError(OperationalError, code=42):
    """ER_ACCESS_DENIED: the user lacks a privilege."""


class AuthenticationError(OperationalError):
    """The server refused the credentials (the password never appears here)."""


class NoSuchUserError(AuthenticationError, code=45):
    """ER_NO_SUCH_USER: authentication with an unknown user."""


class PasswordMismatchError(AuthenticationError, code=47):
    """ER_PASSWORD_MISMATCH (2.11+: ER_CREDS_MISMATCH): wrong password."""


class UnknownRequestTypeError(NotSupportedError, code=48):
    """ER_UNKNOWN_REQUEST_TYPE: the server does not know this request."""


class ServerTimeoutError(OperationalError, code=78):
    """ER_TIMEOUT: a timeout inside the server."""


class WrongSchemaVersionError(DatabaseError, code=109):
    """ER_WRONG_SCHEMA_VERSION: the request was built from a stale schema."""


class LoadingError(OperationalError, code=116):
    """ER_LOADING: the instance is still starting ("bootstrap hasn't finished")."""


class SqlError(ProgrammingError):
    """An SQL statement was rejected."""


class SqlSyntaxError(SqlError, code=184):
    """ER_SQL_SYNTAX_NEAR_TOKEN."""


class SqlParserError(SqlError, code=186):
    """ER_SQL_PARSER_GENERIC."""


class SqlBindNotFoundError(SqlError, code=161):
    """ER_SQL_BIND_NOT_FOUND: a named parameter is not in the statement."""


class SyncQuorumTimeoutError(OperationalError, code=216):
    """ER_SYNC_QUORUM_TIMEOUT: a synchronous transaction did not get its quorum."""


class SyncRollbackError(OperationalError, code=217):
    """ER_SYNC_ROLLBACK: a synchronous transaction was rolled back."""


# Client-side failures.
class NetworkError(DatabaseError):
    """The connection failed: refused, reset, closed, unreachable.

    ``request_sent`` is False when the request certainly never reached the
    server (no connection, refused, failed before the write): retrying it
    anywhere is safe.  None means it may have been sent.
    """

    request_sent: bool | None = None


class ConnectionClosedError(NetworkError):
    """The request could not complete because its connection was closed."""


class RequestTimeoutError(NetworkError, TimeoutError):
    """The request's deadline passed before its reply arrived.

    For a write the outcome is unknown: it may have been applied.
    """


class UnknownOutcomeError(NetworkError):
    """A write was sent, then the connection died or its deadline passed.

    It may or may not have been applied; it is never retried automatically.
    The original error is ``__cause__``.
    """


class UnknownOutcomeTimeoutError(UnknownOutcomeError, RequestTimeoutError):
    """A write's deadline passed after it was sent: a timeout whose outcome is unknown."""


class ProtocolError(NetworkError):
    """The peer sent bytes that are not valid IPROTO (the connection is dropped)."""


class SslError(DatabaseError):
    """TLS set-up or handshake failed."""


class SchemaError(DatabaseError):
    """A space, index or field name is unknown to the schema."""


class SchemaReloadException(DatabaseError):
    """The schema changed under a request (compatibility name)."""


class ClusterDiscoveryError(DatabaseError):
    """Cluster discovery failed (compatibility name)."""


class PoolClosedError(InterfaceError):
    """The pool (or connection) was closed; no new request is accepted."""


class PoolTopologyError(DatabaseError):
    """No pool member fits the request's mode."""


PoolTolopogyError = PoolTopologyError


class CrudModuleError(DatabaseError):
    """A crud function returned an error (``.extra_info_error`` holds it)."""

    def __init__(self, extra_info_error: Any, message: str = "") -> None:
        text = message or str(getattr(extra_info_error, "str", "") or extra_info_error)
        super().__init__(0, text)
        self.extra_info_error = extra_info_error


class CrudModuleManyError(DatabaseError):
    """A crud ``*_many`` call failed for some items.

    ``success_list`` is the result for the items that succeeded (or None),
    ``errors_list`` the list of per-item errors.
    """

    def __init__(self, success_list: Any, errors_list: list[Any]) -> None:
        first = errors_list[0] if errors_list else None
        text = str(getattr(first, "str", "") or first) if first is not None else ""
        super().__init__(0, f"{len(errors_list)} crud error(s); first: {text}")
        self.success_list = success_list
        self.errors_list = errors_list


__all__ = [
    "AccessDeniedError", "AuthenticationError", "ClusterConnectWarning", "ClusterDiscoveryError",
    "ConfigurationError", "ConnectionClosedError", "CrudModuleError", "CrudModuleManyError", "DataError",
    "DatabaseError", "DuplicateKeyError", "EncodingError", "Error", "IllegalParamsError", "IntegrityError",
    "InterfaceError", "InternalError", "LoadingError", "NetworkError", "NetworkWarning", "NoSuchIndexError",
    "NoSuchProcedureError", "NoSuchSpaceError", "NoSuchUserError", "NonMasterError", "NotSupportedError",
    "OperationalError", "PasswordMismatchError", "PoolClosedError", "PoolTolopogyError",
    "PoolTolopogyWarning", "PoolTopologyError", "PoolTopologyWarning", "ProcLuaError", "ProgrammingError",
    "ProtocolError", "ReadOnlyError", "RequestTimeoutError", "SchemaError", "SchemaReloadException",
    "ServerTimeoutError", "SqlBindNotFoundError", "SqlError", "SqlParserError", "SqlSyntaxError", "SslError",
    "SyncQuorumTimeoutError", "SyncRollbackError", "UnknownOutcomeError", "UnknownOutcomeTimeoutError",
    "UnknownRequestTypeError", "Warning",
    "WrongSchemaVersionError",
]
