"""A loopback TCP proxy whose open connections can be frozen: sockets stay open, no byte moves (half-open)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _Link:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.frozen = threading.Event()
        self.closed = threading.Event()

    def pump(self, source: socket.socket, sink: socket.socket) -> None:
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
                sink.sendall(data)
        except OSError:
            pass  # either side closed: end this link
        finally:
            self.close()

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
    """Forwards 127.0.0.1:<port> to `target` (TCP, or a Unix socket directory as libpq names one).

    freeze() silences every link open now; new links work.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.05)
        self.port: int = self._server.getsockname()[1]
        self._links: list[_Link] = []
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
            link = _Link(client, upstream)
            with self._lock:
                self._links.append(link)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=link.pump, args=(source, sink), daemon=True).start()

    @property
    def open_links(self) -> int:
        with self._lock:
            return sum(not link.closed.is_set() for link in self._links)

    def freeze(self) -> int:
        """Freeze every open link; returns how many."""
        with self._lock:
            links = [link for link in self._links if not link.closed.is_set()]
        for link in links:
            link.frozen.set()
        return len(links)

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
