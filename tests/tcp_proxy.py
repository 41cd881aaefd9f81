"""A loopback TCP proxy in front of PostgreSQL that can cut the network the way real networks fail.

- freeze(): every link open now goes silent (sockets stay open, no byte moves: half-open); new
  links work.
- partition() / heal(): every link, open now or opened later, is silent until heal(); then the
  bytes held on both sides flow again, as after a cable is plugged back in.
- drop_reply(matches): the proxy reads the PostgreSQL wire protocol (a type byte and an int32
  length per message) and, on the first statement whose SQL and CommandComplete tag `matches`,
  forwards none of that reply: it waits for the server's ReadyForQuery (sent only after the
  statement's implicit transaction committed) and closes both sides. The server committed; the
  client never heard. That is a "lost reply to COMMIT".
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from psycopg.conninfo import conninfo_to_dict, make_conninfo

# Untyped startup-phase requests (int32 length, int32 code), from the protocol documentation.
_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102

# Server messages that end one Execute's result, and the one that ends a whole request.
_RESULT_ENDS = {b"C", b"I", b"s"}  # CommandComplete, EmptyQueryResponse, PortalSuspended
_READY_FOR_QUERY = b"Z"

ReplyMatcher = Callable[[str, str], bool]
"""(the statement's SQL as the client sent it, its CommandComplete tag such as "UPDATE 3")."""


class ReplyDrop:
    """One armed drop: fires on the first reply `matches`, on whichever link carries it."""

    def __init__(self, matches: ReplyMatcher, *, partition: bool) -> None:
        self.matches = matches
        self.partition = partition  # once fired, hold the whole network down until heal()
        self.fired = threading.Event()
        self.sql = ""
        self.tag = ""

    def wait(self, timeout: float) -> None:
        if not self.fired.wait(timeout):
            raise AssertionError(f"no reply matched the armed drop within {timeout}s")

    @property
    def rows(self) -> int:
        """The row count of the dropped tag ("UPDATE 3" -> 3)."""
        return int(self.tag.rsplit(" ", 1)[-1])


@dataclass
class _Pending:
    """A request the client sent whose result has not come back yet."""

    sql: str
    kind: str  # "execute" (ended by one result), "simple" (a Query: ended by ReadyForQuery), "sync"


class _Frames:
    """Splits a byte stream into PostgreSQL messages: (type byte, payload) once typed."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def typed(self) -> Iterator[tuple[bytes, bytes, bytes]]:
        """Complete typed messages as (type, payload, raw bytes); a partial tail stays buffered."""
        while len(self.buffer) >= 5:
            (length,) = struct.unpack("!i", self.buffer[1:5])
            if len(self.buffer) < 1 + length:
                return
            raw = bytes(self.buffer[:1 + length])
            del self.buffer[:1 + length]
            yield raw[:1], raw[5:], raw

    def untyped(self) -> tuple[bytes, bytes] | None:
        """One complete startup-phase message as (payload, raw bytes), or None."""
        if len(self.buffer) < 4:
            return None
        (length,) = struct.unpack("!i", self.buffer[:4])
        if len(self.buffer) < length:
            return None
        raw = bytes(self.buffer[:length])
        del self.buffer[:length]
        return raw[4:], raw


def _cstring(payload: bytes, start: int = 0) -> tuple[str, int]:
    end = payload.index(b"\0", start)
    return payload[start:end].decode("utf-8", "replace"), end + 1


class _Wire:
    """What one link's client asked for, so the server's replies can be matched to their SQL.

    The client side records each message before it is forwarded, so by the time the server's
    reply is read, the request it answers is always known.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = False  # the client sent its StartupMessage: messages are typed from now on
        self.negotiations = 0  # SSLRequest/GSSENCRequest sent: each is answered by one bare byte
        self.opaque = False  # encrypted, or not PostgreSQL: forward without reading
        self.statements: dict[str, str] = {}  # prepared statement name -> SQL ("" = unnamed)
        self.portals: dict[str, str] = {}  # portal name -> SQL
        self.pending: deque[_Pending] = deque()
        self.client = _Frames()
        self.server = _Frames()

    # -- client to server --------------------------------------------------------------------------

    def read_client(self, data: bytes) -> None:
        with self.lock:
            if self.opaque:
                return
            self.client.buffer += data
            while not self.started:
                message = self.client.untyped()
                if message is None:
                    return
                (code,) = struct.unpack("!i", message[0][:4])
                if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                    self.negotiations += 1
                elif code == _CANCEL_REQUEST:
                    self.opaque = True  # a cancel connection: nothing more to read
                    return
                else:
                    self.started = True
            for kind, payload, _raw in self.client.typed():
                self._client_message(kind, payload)

    def _client_message(self, kind: bytes, payload: bytes) -> None:
        if kind == b"P":  # Parse: statement name, SQL
            name, at = _cstring(payload)
            self.statements[name], _ = _cstring(payload, at)
        elif kind == b"B":  # Bind: portal name, statement name
            portal, at = _cstring(payload)
            statement, _ = _cstring(payload, at)
            self.portals[portal] = self.statements.get(statement, "")
        elif kind == b"E":  # Execute: portal name
            portal, _ = _cstring(payload)
            self.pending.append(_Pending(self.portals.get(portal, ""), "execute"))
        elif kind == b"Q":  # a simple Query: one or more statements, then ReadyForQuery
            sql, _ = _cstring(payload)
            self.pending.append(_Pending(sql, "simple"))
        elif kind == b"F":  # FunctionCall: answered like a simple query
            self.pending.append(_Pending("", "simple"))
        elif kind == b"S":  # Sync: ends an extended-protocol request
            self.pending.append(_Pending("", "sync"))

    # -- server to client --------------------------------------------------------------------------

    def read_server(self, data: bytes) -> list[tuple[bytes, bytes, bytes, str]]:
        """Complete server messages as (type, payload, raw, SQL they answer); raw bytes when opaque."""
        with self.lock:
            if self.opaque:
                return [(b"", b"", data, "")]
            self.server.buffer += data
            messages: list[tuple[bytes, bytes, bytes, str]] = []
            while self.negotiations and self.server.buffer:
                answer = bytes(self.server.buffer[:1])
                del self.server.buffer[:1]
                self.negotiations -= 1
                if answer in (b"S", b"G"):  # TLS or GSS encryption accepted: unreadable from here
                    self.opaque = True
                    messages.append((b"", b"", answer + bytes(self.server.buffer), ""))
                    self.server.buffer.clear()
                    return messages
                messages.append((b"", b"", answer, ""))
            messages.extend((kind, payload, raw, self._answered(kind)) for kind, payload, raw in self.server.typed())
            return messages

    def _answered(self, kind: bytes) -> str:
        """The SQL this server message answers; retires the requests it completes."""
        head = self.pending[0] if self.pending else None
        sql = head.sql if head is not None else ""
        if kind in _RESULT_ENDS and head is not None and head.kind == "execute":
            self.pending.popleft()
        elif kind == _READY_FOR_QUERY:
            # Everything up to and including the first Sync or simple Query is answered (after
            # an error, the server skips the remaining Executes before the Sync).
            while self.pending:
                if self.pending.popleft().kind != "execute":
                    break
        return sql


class _Link:
    def __init__(self, proxy: FreezableProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.frozen = threading.Event()
        self.closed = threading.Event()
        self.wire = _Wire()
        self.dropping: ReplyDrop | None = None  # withholding a reply until its ReadyForQuery

    def pump(self, source: socket.socket, sink: socket.socket) -> None:
        from_server = source is self.upstream
        source.settimeout(0.05)
        try:
            while not self.closed.is_set():
                if self.frozen.is_set():
                    # Read nothing and forward nothing, but keep both sockets open: to each side
                    # the other just went silent, as behind a dead NAT entry or a cut cable.
                    self.closed.wait(0.05)
                    continue
                try:
                    data = source.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                if from_server:
                    self._from_server(data)
                elif self.dropping is None:
                    self.wire.read_client(data)  # recorded before it is forwarded
                    sink.sendall(data)
        except OSError:
            pass  # either side closed: end this link
        finally:
            self.close()

    def _from_server(self, data: bytes) -> None:
        out = bytearray()
        for kind, payload, raw, sql in self.wire.read_server(data):
            if self.dropping is None and kind == b"C":
                self.dropping = self.proxy._claim_drop(sql, payload.rstrip(b"\0").decode())
            if self.dropping is None:
                out += raw
            elif kind == _READY_FOR_QUERY:
                # The statement committed and the server is idle: cut the link without a word.
                self.client.sendall(out)
                self.proxy._fire(self.dropping)
                self.close()
                return
        if out:
            self.client.sendall(out)

    def close(self) -> None:
        self.closed.set()
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.close()


def connect_upstream(host: str, port: int) -> socket.socket:
    """A TCP connection to host:port, or to PostgreSQL's Unix socket when `host` is a directory."""
    if host.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(f"{host}/.s.PGSQL.{port}")
        return sock
    return socket.create_connection((host, port))


class FreezableProxy:
    """Forwards 127.0.0.1:<port> to `target` (TCP, or a Unix socket directory as libpq names one)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.05)
        self.port: int = self._server.getsockname()[1]
        self._links: list[_Link] = []
        self._drops: list[ReplyDrop] = []
        self._partitioned = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="freezable-proxy", daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = connect_upstream(*self.target)
            link = _Link(self, client, upstream)
            with self._lock:
                if self._partitioned:
                    link.frozen.set()
                self._links.append(link)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=link.pump, args=(source, sink), daemon=True).start()

    def _open_links(self) -> list[_Link]:
        with self._lock:
            return [link for link in self._links if not link.closed.is_set()]

    @property
    def open_links(self) -> int:
        return len(self._open_links())

    def freeze(self) -> int:
        """Freeze every open link; returns how many. Links opened later work."""
        links = self._open_links()
        for link in links:
            link.frozen.set()
        return len(links)

    def partition(self) -> int:
        """Freeze every open link and every link opened until heal(); returns how many are open."""
        with self._lock:
            self._partitioned = True
        return self.freeze()

    def heal(self) -> None:
        """End a partition (or a freeze): every link moves bytes again."""
        with self._lock:
            self._partitioned = False
            links = list(self._links)
        for link in links:
            link.frozen.clear()

    def drop_reply(self, matches: ReplyMatcher, *, partition: bool = False) -> ReplyDrop:
        """Arm a one-shot drop of the first reply whose (SQL, CommandComplete tag) `matches`.

        With partition=True the network also goes down at that moment (as partition()), so the
        client cannot reconnect until heal(): the test can look at what the server committed.
        """
        drop = ReplyDrop(matches, partition=partition)
        with self._lock:
            self._drops.append(drop)
        return drop

    def _claim_drop(self, sql: str, tag: str) -> ReplyDrop | None:
        with self._lock:
            for drop in self._drops:
                if drop.matches(sql, tag):
                    self._drops.remove(drop)
                    drop.sql, drop.tag = sql, tag
                    return drop
        return None

    def _fire(self, drop: ReplyDrop) -> None:
        if drop.partition:
            self.partition()
        drop.fired.set()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(5)
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()


@contextmanager
def freezable_proxy(target_host: str, target_port: int) -> Iterator[FreezableProxy]:
    proxy = FreezableProxy(target_host, target_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()


@contextmanager
def database_proxy(database_url: str) -> Iterator[tuple[FreezableProxy, str]]:
    """A proxy in front of `database_url`'s server (TCP or Unix socket), and the DSN through it."""
    params = conninfo_to_dict(database_url)
    host = str(params.get("host") or "/tmp")
    with freezable_proxy(host, int(str(params.get("port") or 5432))) as proxy:
        yield proxy, make_conninfo(database_url, host="127.0.0.1", port=str(proxy.port))
