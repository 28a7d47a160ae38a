"""Opening a connection's socket, and the one place socket errors become library errors.

Rules:
- Socket and TLS exceptions become library errors here and nowhere else
  (:func:`translate_socket_error`); transport.py and aio/wire.py call it at
  their own edges.  Each message names what failed and where ("connect to
  host:port", "read from host:port").
- Opening is bounded: TCP or unix socket, TLS handshake and the greeting each
  within the caller's timeout; a failure closes what was opened.
- A TLS key's pass phrase is never shown (repr) and never asked for on the
  terminal: a missing one is a clear error.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field

from .errors import ConnectionClosedError, Error, NetworkError, ProtocolError, SslError
from .protocol import GREETING_SIZE, Greeting, parse_greeting


@dataclass(frozen=True)
class TlsOptions:
    """Client TLS settings (the ``ssl_*`` options of the compatible API)."""

    key_file: str | None = None
    cert_file: str | None = None
    ca_file: str | None = None
    ciphers: str | None = None
    password: str | None = field(default=None, repr=False)  # the key's pass phrase: never shown
    password_file: str | None = None

    def context(self) -> ssl.SSLContext:
        """Build the client context: the server certificate is verified when a CA is given."""
        try:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if self.ca_file:
                context.load_verify_locations(cafile=self.ca_file)
                context.check_hostname = False  # Tarantool certificates rarely name the host
                context.verify_mode = ssl.CERT_REQUIRED
            else:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if self.cert_file:
                self._load_cert_chain(context)
            if self.ciphers:
                context.set_ciphers(self.ciphers)
            return context
        except (ssl.SSLError, OSError) as exc:
            raise SslError(0, f"cannot set up TLS: {exc}") from exc

    def _load_cert_chain(self, context: ssl.SSLContext) -> None:
        # Never pass password=None: for an encrypted key OpenSSL would then ask for
        # the pass phrase on the terminal (a hang) or fail with a bare EINVAL.
        candidates: list[str] = [] if self.password is None else [self.password]
        if self.password_file:
            with open(self.password_file, encoding="utf-8") as lines:
                candidates += [line.rstrip("\r\n") for line in lines if line.strip()]
        if not candidates:
            try:
                context.load_cert_chain(self.cert_file, self.key_file, password=self._no_key_password)  # type: ignore[arg-type]
                return
            except self._KeyNeedsPassword:
                raise SslError(0, f"cannot load the client certificate/key: the key {self.key_file or self.cert_file} "
                                  "is encrypted and neither ssl_password nor ssl_password_file is given") from None
        last_error: Exception | None = None
        for password in candidates:
            try:
                context.load_cert_chain(self.cert_file, self.key_file, password=password)  # type: ignore[arg-type]
                return
            except ssl.SSLError as exc:
                last_error = exc
        raise SslError(0, f"cannot load the client certificate/key (wrong key password? "
                          f"{len(candidates)} tried): {last_error}")

    class _KeyNeedsPassword(Exception):
        """Raised from OpenSSL's password callback when no password was configured."""

    @staticmethod
    def _no_key_password() -> str:
        raise TlsOptions._KeyNeedsPassword()


def translate_socket_error(exc: BaseException, where: str) -> Error:
    """Map a socket-level exception to the library's error, naming what failed."""
    if isinstance(exc, Error):
        return exc
    if isinstance(exc, ssl.SSLError):
        return SslError(0, f"{where}: TLS error: {exc}")
    if isinstance(exc, socket.timeout):
        return NetworkError(0, f"{where}: timed out")
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        return NetworkError(exc.errno or 0, f"{where}: {reason}")
    return NetworkError(0, f"{where}: {type(exc).__name__}: {exc}")


def open_socket(host: str | None, port: int | str, timeout: float, tls: TlsOptions | None) -> socket.socket:
    """Connect (TCP, or a unix socket when host is None or 'unix/'), do TLS, within ``timeout``."""
    where = f"connect to {host}:{port}" if host not in (None, "unix/") else f"connect to unix socket {port}"
    sock: socket.socket | None = None
    try:
        if host in (None, "unix/"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(str(port))
        else:
            sock = socket.create_connection((host, int(port)), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            sock = tls.context().wrap_socket(sock, server_hostname=host if host not in (None, "unix/") else None)
        return sock
    except BaseException as exc:
        if sock is not None:
            sock.close()
        raise translate_socket_error(exc, where) from exc


def read_greeting(sock: socket.socket, timeout: float, where: str) -> Greeting:
    """Read the 128-byte greeting (the server sends it unasked) within ``timeout``."""
    sock.settimeout(timeout)
    data = b""
    try:
        while len(data) < GREETING_SIZE:
            chunk = sock.recv(GREETING_SIZE - len(data))
            if not chunk:
                raise ConnectionClosedError(0, f"{where}: the server closed the connection before its greeting")
            data += chunk
    except Error:
        raise
    except BaseException as exc:
        raise translate_socket_error(exc, f"{where}: reading the greeting") from exc
    try:
        return parse_greeting(data)
    except ProtocolError as exc:  # say which server it was: a pool has several
        raise ProtocolError(exc.code, f"{where}: {exc.message}") from exc
