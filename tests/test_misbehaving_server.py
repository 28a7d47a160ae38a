"""Connection and ConnectionPool against a server that does not play by the rules.

A small TCP server written here (threads, 127.0.0.1, a free port) plays one
script per client: garbage instead of a greeting, the wrong kind of greeting
(Lua console, HTTP), silence, a reply under an unknown sync, a reply cut in
half, a frame declaring a huge size, garbage after a valid greeting.  For
each, the Connection fails with an error that names the problem
(ProtocolError / NetworkError / RequestTimeoutError), within a bound, and no
thread is left behind after close().

Then a ConnectionPool of [real inst1, real inst2, one such server]: the bad
member is UNHEALTHY with a last_error that explains it, and the real ones
keep serving read-write and read-only requests.
"""

from __future__ import annotations

import base64
import logging
import socket
import struct
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from typing import Any, Callable

import msgpack
import pytest

from tarantool_pool import (
    Connection,
    ConnectionClosedError,
    ConnectionPool,
    Mode,
    NetworkError,
    ProtocolError,
    RequestTimeoutError,
    Status,
)
from tarantool_pool.protocol import DEFAULT_MAX_FRAME_SIZE

pytestmark = pytest.mark.timeout(60)

LIBRARY_THREAD_PREFIX = "tarantool_pool-"  # readers and pool workers
SERVER_THREAD_PREFIX = "fake-server"


# -- the fake server -------------------------------------------------------------------------

def greeting(protocol: str = "Binary", version: str = "2.6.0") -> bytes:
    """A well-formed 128-byte greeting of the given kind."""
    line1 = f"Tarantool {version} ({protocol}) {uuid.UUID(int=7)}".ljust(63) + "\n"
    line2 = base64.b64encode(bytes(range(32))).decode().ljust(63) + "\n"
    return (line1 + line2).encode()


LUA_CONSOLE_GREETING = ("Tarantool 2.6.0 (Lua console)".ljust(63) + "\n"
                        + "type 'help' for interactive help".ljust(63) + "\n").encode()
HTTP_RESPONSE = (b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Type: text/html\r\n"
                 b"Content-Length: 52\r\nConnection: close\r\n\r\n"
                 b"<html><body><h1>400 Bad Request</h1></body></html>\r\n")
GARBAGE = bytes((i * 37 + 11) % 256 for i in range(256))


def reply(sync: int, body: dict[int, Any] | None = None, status: int = 0, schema_version: int = 1) -> bytes:
    payload = msgpack.packb({0x00: status, 0x01: sync, 0x05: schema_version})
    payload += msgpack.packb({} if body is None else body)
    return b"\xce" + struct.pack(">I", len(payload)) + payload


class Client:
    """One accepted connection, as the script sees it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv_exactly(self, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def read_request(self) -> tuple[int, int, dict[Any, Any]] | None:
        """(request type, sync, body) of the next request, or None once the client is gone."""
        try:
            prefix = self._recv_exactly(5)
            if prefix is None:
                return None
            assert prefix[0] == 0xCE, f"the client sent a size prefix {prefix!r}"
            payload = self._recv_exactly(struct.unpack(">I", prefix[1:])[0])
        except OSError:
            return None
        if payload is None:
            return None
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        unpacker.feed(payload)
        header = unpacker.unpack()
        body = unpacker.unpack() if unpacker.tell() < len(payload) else {}
        return header[0x00], header[0x01], body

    def hold(self) -> None:
        """Read and ignore whatever comes until the client goes away."""
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass


Script = Callable[[Client], None]


class FakeServer:
    """Accepts on 127.0.0.1:<free port>; each client gets ``script`` in its own thread."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.05)
        self.host, self.port = self.listener.getsockname()
        self.accepted = 0
        self._stopping = threading.Event()
        self._clients: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"{SERVER_THREAD_PREFIX}-accept",
                                          daemon=True)
        self._acceptor.start()

    @property
    def addr(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port}

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            self._clients.append(sock)
            thread = threading.Thread(target=self._run_script, args=(sock,),
                                      name=f"{SERVER_THREAD_PREFIX}-client-{self.accepted}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run_script(self, sock: socket.socket) -> None:
        try:
            self.script(Client(sock))
        except OSError:
            pass  # the client went away mid-script
        finally:
            sock.close()

    def close(self) -> None:
        self._stopping.set()
        self._acceptor.join(timeout=5)
        self.listener.close()
        for sock in list(self._clients):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in list(self._threads):
            thread.join(timeout=5)
        assert not any(t.is_alive() for t in [self._acceptor, *self._threads]), "the fake server did not stop"


# -- scripts -------------------------------------------------------------------------------

def send_then_hold(data: bytes) -> Script:
    def script(client: Client) -> None:
        client.send(data)
        client.hold()
    return script


def send_then_close(data: bytes) -> Script:
    def script(client: Client) -> None:
        client.send(data)
    return script


def greet_then_answer(answer: Callable[[Client, int, int, dict[Any, Any]], None]) -> Script:
    """Send a valid greeting, then call ``answer`` for each request (AUTH is accepted)."""
    def script(client: Client) -> None:
        client.send(greeting())
        while (request := client.read_request()) is not None:
            code, sync, body = request
            if code == 7:  # AUTH: whoever you are, welcome
                client.send(reply(sync))
                continue
            answer(client, code, sync, body)
    return script


def answer_unknown_sync_then_real(client: Client, code: int, sync: int, body: dict[Any, Any]) -> None:
    client.send(reply(sync + 1_000_000, {0x30: ["not yours"]}))
    client.send(reply(sync, {0x30: ["yours"]}))


def answer_unknown_sync_only(client: Client, code: int, sync: int, body: dict[Any, Any]) -> None:
    client.send(reply(sync + 1_000_000, {0x30: ["not yours"]}))


def answer_half_then_silence(client: Client, code: int, sync: int, body: dict[Any, Any]) -> None:
    frame = reply(sync, {0x30: ["x" * 100]})
    client.send(frame[:len(frame) // 2])


def answer_huge_frame(client: Client, code: int, sync: int, body: dict[Any, Any]) -> None:
    client.send(b"\xce\xff\xff\xff\xff" + b"\x83\x00\x00")


def answer_garbage(client: Client, code: int, sync: int, body: dict[Any, Any]) -> None:
    client.send(GARBAGE)


# -- fixtures --------------------------------------------------------------------------------

def threads_named(prefix: str) -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(prefix)}


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    before = threads_named(LIBRARY_THREAD_PREFIX) | threads_named(SERVER_THREAD_PREFIX)
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = (threads_named(LIBRARY_THREAD_PREFIX) | threads_named(SERVER_THREAD_PREFIX)) - before
        if not left:
            return
        time.sleep(0.05)
    frames = sys._current_frames()
    stacks = "\n".join(f"--- {t.name}:\n" + "".join(traceback.format_stack(frames[t.ident]))
                        for t in left if t.ident in frames)
    pytest.fail(f"threads left running after close: {sorted(t.name for t in left)}\n{stacks}")


@pytest.fixture
def serve() -> Iterator[Callable[[Script], FakeServer]]:
    servers: list[FakeServer] = []

    def start(script: Script) -> FakeServer:
        server = FakeServer(script)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def connect(server: FakeServer, **kwargs: Any) -> Connection:
    kwargs.setdefault("connection_timeout", 2)
    kwargs.setdefault("socket_timeout", 2)
    kwargs.setdefault("reconnect_max_attempts", 0)
    return Connection(server.host, server.port, **kwargs)


def assert_fails_within(seconds: float, error_type: type[BaseException], action: Callable[[], object],
                        match: str | None = None) -> BaseException:
    started = time.monotonic()
    with pytest.raises(error_type, match=match) as caught:
        action()
    elapsed = time.monotonic() - started
    assert elapsed < seconds, f"{error_type.__name__} took {elapsed:.2f} s"
    return caught.value


# -- a bad greeting ----------------------------------------------------------------------------

def test_garbage_instead_of_a_greeting_fails_connect_with_protocol_error(serve: Any) -> None:
    server = serve(send_then_hold(GARBAGE))
    error = assert_fails_within(1.5, ProtocolError, lambda: connect(server), match="not a Tarantool server")
    assert server.name in str(error)  # which server it was


def test_lua_console_greeting_is_refused_naming_the_console(serve: Any) -> None:
    server = serve(send_then_hold(LUA_CONSOLE_GREETING))
    assert_fails_within(1.5, ProtocolError, lambda: connect(server), match="Lua console.*admin console port")


def test_http_response_instead_of_a_greeting_is_refused_quoting_what_came(serve: Any) -> None:
    server = serve(send_then_hold(HTTP_RESPONSE))
    assert_fails_within(1.5, ProtocolError, lambda: connect(server),
                        match="not a Tarantool server: greeting starts with 'HTTP/1.1 400 Bad Request")


def test_short_http_response_then_close_fails_before_the_greeting(serve: Any) -> None:
    server = serve(send_then_close(b"HTTP/1.0 400 Bad Request\r\n\r\n"))
    assert_fails_within(1.5, ConnectionClosedError, lambda: connect(server),
                        match="closed the connection before its greeting")


def test_server_that_never_greets_fails_connect_at_its_timeout(serve: Any) -> None:
    server = serve(lambda client: client.hold())
    error = assert_fails_within(3, NetworkError, lambda: connect(server, connection_timeout=0.5),
                                match="greeting")
    assert "timed out" in str(error)


def test_greeting_whose_salt_is_not_base64_is_refused(serve: Any) -> None:
    bad_salt = greeting()[:64] + b"!!not base64!!".ljust(63) + b"\n"
    server = serve(send_then_hold(bad_salt))
    assert_fails_within(1.5, ProtocolError, lambda: connect(server), match="salt")


# -- misbehaviour after a valid greeting ------------------------------------------------------

def test_garbage_after_a_valid_greeting_fails_the_request_at_once(serve: Any) -> None:
    server = serve(greet_then_answer(answer_garbage))
    conn = connect(server)
    try:
        error = assert_fails_within(1.5, ProtocolError, lambda: conn.ping(timeout=10))
        assert f"read from {server.name}: " in str(error)  # which server, then what was wrong
        assert conn.is_closed()  # the link is dropped, not left decoding the rest
    finally:
        conn.close()


def test_garbage_sent_unasked_after_the_greeting_fails_connect_or_the_next_request_loudly(serve: Any) -> None:
    # Greeting and garbage in one write.  Nobody reads an idle link (callers read their own
    # replies), so the garbage is met either by connect() itself or by the next request: that
    # request must fail with a ProtocolError naming the server, and on_disconnect must hear of it.
    # Never silence, and never a reply decoded from the garbage.
    lost: list[BaseException] = []

    server = serve(send_then_hold(greeting() + GARBAGE))
    for _ in range(10):
        lost.clear()
        try:
            conn = connect(server, on_disconnect=lost.append)
        except ProtocolError as error:
            assert server.name in str(error)
            continue
        try:
            error = assert_fails_within(1.5, ProtocolError, lambda: conn.ping(timeout=10))
            assert f"read from {server.name}: " in str(error)
            assert len(lost) == 1 and isinstance(lost[0], ProtocolError) and server.name in str(lost[0])
            assert conn.is_closed()
        finally:
            conn.close()


def test_garbage_in_reply_to_auth_fails_connect_with_protocol_error(serve: Any) -> None:
    def greet_then_garbage_on_auth(client: Client) -> None:
        client.send(greeting())
        if client.read_request() is not None:
            client.send(GARBAGE)
        client.hold()

    server = serve(greet_then_garbage_on_auth)
    assert_fails_within(1.5, ProtocolError, lambda: connect(server, user="test", password="x"),
                        match=f"read from {server.name}")


@pytest.mark.parametrize("max_frame_size", [DEFAULT_MAX_FRAME_SIZE, 1024])
def test_frame_declaring_a_huge_size_fails_the_request_naming_size_and_limit(serve: Any,
                                                                             max_frame_size: int) -> None:
    server = serve(greet_then_answer(answer_huge_frame))
    conn = connect(server, max_frame_size=max_frame_size)
    try:
        error = assert_fails_within(1.5, ProtocolError, lambda: conn.ping(timeout=10))
        assert f"frame of {0xFFFFFFFF} bytes exceeds the {max_frame_size}-byte limit" in str(error)
        assert server.name in str(error)
    finally:
        conn.close()


def test_reply_under_an_unknown_sync_is_dropped_and_the_real_reply_still_arrives(
        serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tarantool_pool")
    server = serve(greet_then_answer(answer_unknown_sync_then_real))
    conn = connect(server)
    try:
        for _ in range(3):
            assert conn.eval("return 1").data == ["yours"]
        assert not conn.is_closed()
    finally:
        conn.close()
    assert any("dropped a late or unknown reply" in record.getMessage() for record in caplog.records)


def test_reply_under_an_unknown_sync_only_leaves_the_request_to_time_out_at_its_deadline(serve: Any) -> None:
    server = serve(greet_then_answer(answer_unknown_sync_only))
    conn = connect(server)
    try:
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError, match="no reply within the deadline"):
            conn.eval("return 1", timeout=0.5)
        elapsed = time.monotonic() - started
        assert 0.45 <= elapsed < 1.5, f"timed out after {elapsed:.2f} s, the deadline was 0.5 s"
        assert not conn.is_closed()  # a stray reply is not a reason to drop the link
    finally:
        conn.close()


def test_reply_cut_in_half_then_silence_times_out_at_the_deadline(serve: Any) -> None:
    server = serve(greet_then_answer(answer_half_then_silence))
    conn = connect(server)
    try:
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError):
            conn.eval("return 1", timeout=0.5)
        elapsed = time.monotonic() - started
        assert 0.45 <= elapsed < 1.5, f"timed out after {elapsed:.2f} s, the deadline was 0.5 s"
    finally:
        started = time.monotonic()
        conn.close()
        assert time.monotonic() - started < 3, "close() waited on a reader stuck in a half frame"


def test_server_that_closes_after_the_greeting_fails_the_request_as_closed(serve: Any) -> None:
    def greet_then_close_on_request(client: Client) -> None:
        client.send(greeting())
        client.read_request()  # then leave

    server = serve(greet_then_close_on_request)
    conn = connect(server)
    try:
        assert_fails_within(1.5, NetworkError, lambda: conn.ping(timeout=10), match="closed the connection")
    finally:
        conn.close()


# -- one bad member in a pool of real instances ------------------------------------------------

BAD_MEMBERS: dict[str, tuple[Script, str]] = {
    "garbage_greeting": (send_then_hold(GARBAGE), "not a Tarantool server"),
    "lua_console": (send_then_hold(LUA_CONSOLE_GREETING), "admin console port"),
    "http": (send_then_hold(HTTP_RESPONSE), "greeting starts with 'HTTP/1.1"),
    "huge_frame": (greet_then_answer(answer_huge_frame), "exceeds the 268435456-byte limit"),
    "garbage_after_greeting": (greet_then_answer(answer_garbage), "frame header is not a map with a status"),
    "silent": (lambda client: client.hold(), "timed out"),
}


@pytest.mark.parametrize("kind", sorted(BAD_MEMBERS))
def test_pool_marks_a_misbehaving_member_unhealthy_and_keeps_serving_from_the_others(
        cluster: Any, serve: Any, kind: str) -> None:
    script, explanation = BAD_MEMBERS[kind]
    bad = serve(script)
    addrs = [cluster.instances["inst1"].addr, cluster.instances["inst2"].addr, bad.addr]
    pool = ConnectionPool(addrs, user=cluster.user, password=cluster.password, connection_timeout=1,
                          refresh_timeout=1, refresh_delay=0.5)
    try:
        unit = pool.pool[bad.name]
        assert unit.first_refresh_done.wait(timeout=5)
        assert unit.state.status is Status.UNHEALTHY
        assert unit.last_error is not None and explanation in unit.last_error, unit.last_error
        assert bad.accepted >= 1  # it was really tried
        pool.wait(Mode.RW, timeout=10)
        pool.wait(Mode.RO, timeout=10)
        assert pool.call("whoami", mode=Mode.RW).data[0]["name"] == "inst1"
        assert pool.call("whoami", mode=Mode.RO).data[0]["name"] == "inst2"
        served = {pool.call("whoami", mode=Mode.ANY).data[0]["name"] for _ in range(10)}
        assert served == {"inst1", "inst2"}
        assert pool.select("test_int", 0, mode=Mode.PREFER_RO).data is not None
        assert unit.requests == 0, "a user request was routed to the unhealthy member"
        assert unit.state.status is Status.UNHEALTHY  # later refreshes keep it out
    finally:
        pool.close()


def test_only_the_reading_caller_closes_the_socket_so_its_descriptor_cannot_be_reused_under_it() -> None:
    """A Link killed from another thread shuts its socket down and leaves closing it to its reader.

    Were the killer to close the descriptor, a caller just about to poll it as the link's reader
    could find that number reused by a new socket and wait on it (CI once saw a reader outlive
    its pool's close() that way).  We hold the reading caller inside the decoder, kill the link
    from this thread, and check that the descriptor stays open until the reader has let go.
    """
    from tarantool_pool.protocol import Decoder, parse_greeting
    from tarantool_pool.transport import Link, ReplySlot

    ours, server = socket.socketpair()
    in_decoder, release = threading.Event(), threading.Event()

    class HoldingDecoder(Decoder):
        """Keeps the reading caller inside feed() until the test releases it."""

        def feed(self, data: Any) -> None:
            in_decoder.set()
            release.wait(10)
            super().feed(data)

    link = Link(ours, parse_greeting(greeting()), "socketpair", HoldingDecoder("utf-8"))
    slot = ReplySlot()
    link.register(1, slot)
    outcome: list[bool] = []
    caller = threading.Thread(target=lambda: outcome.append(link.wait(1, slot, time.monotonic() + 30)))
    caller.start()
    try:
        server.sendall(reply(1, {0x30: [1]}))
        assert in_decoder.wait(5), "the waiting caller never read the socket"
        link.lose(ConnectionError("killed by the test"))
        assert not link.alive
        assert ours.fileno() != -1, "closed by a thread other than the one reading it"
        assert server.recv(1) == b"", "the peer must see the shutdown at once"
    finally:
        release.set()
        caller.join(10)
        link.close()
        server.close()
    assert outcome == [True] and slot.error is not None, "the caller must get the link's death"
    assert ours.fileno() == -1, "the reading caller did not close the socket as it let go"
    assert link._watcher is None or not link._watcher.is_alive()


def test_a_send_to_a_peer_that_never_reads_fails_after_the_send_timeout() -> None:
    """A plain socket is blocking (no timeout); a send must still never block
    longer than the send timeout when the peer stops reading and the kernel's buffer fills."""
    from tarantool_pool.protocol import Decoder, parse_greeting
    from tarantool_pool.transport import Link

    ours, server = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    link = Link(ours, parse_greeting(greeting()), "socketpair", Decoder("utf-8"), send_timeout=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(NetworkError, match="send to socketpair: timed out"):
            link.send(b"\x00" * (8 * 1024 * 1024))
        assert time.monotonic() - started < 5, "the send waited far past its timeout"
        assert not link.alive, "a send that timed out leaves a half-written request: the link must die"
    finally:
        link.close()
        server.close()
    assert link._watcher is None or not link._watcher.is_alive()


def test_a_large_request_is_sent_whole_to_a_peer_that_reads_slowly() -> None:
    from tarantool_pool.protocol import Decoder, parse_greeting
    from tarantool_pool.transport import Link

    ours, server = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    payload = bytes(range(256)) * 4096  # 1 MiB: many times the send buffer
    received = bytearray()

    def read_slowly() -> None:
        while len(received) < len(payload):
            chunk = server.recv(65536)
            if not chunk:
                return
            received.extend(chunk)
            time.sleep(0.001)

    reader = threading.Thread(target=read_slowly, daemon=True)
    reader.start()
    link = Link(ours, parse_greeting(greeting()), "socketpair", Decoder("utf-8"), send_timeout=5.0)
    try:
        link.send(payload)
        reader.join(10)
        assert bytes(received) == payload
        assert link.alive
    finally:
        link.close()
        server.close()
