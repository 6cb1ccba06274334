"""A TCP proxy on loopback in front of Redis that can lose the answer to one command.

``cut_after(marker, down_for)`` arms it: the next request that carries ``marker`` reaches
Redis (which runs it), but its answer never reaches the client — every connection is closed
at once, and for ``down_for`` seconds every new one is closed as soon as it is accepted, as
if Redis had gone away just after running the command. ``partition(down_for)`` cuts it off
the same way at once, whatever is sent. ``stall(for_)`` makes Redis slow for the client: what
it sends in the next ``for_`` seconds reaches Redis only when they are over. Threads and plain
sockets, so that it serves trio and asyncio tests alike.
"""

from __future__ import annotations

import socket
import threading
import time

__all__ = ["RedisProxy"]


class RedisProxy:
    def __init__(self, host: str = "127.0.0.1", port: int = 6379) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._marker: bytes | None = None
        self._down_for = 0.0
        self._down_until = 0.0
        self._stalled_until = 0.0
        self._closed = False
        #: Set once the armed command went through to Redis and its answer was lost.
        self.cut = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="redis-proxy").start()

    def url(self, db: int = 15) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def cut_after(self, marker: bytes, *, down_for: float) -> None:
        with self._lock:
            self._marker, self._down_for = marker, down_for
        self.cut.clear()

    def partition(self, *, down_for: float) -> None:
        """Cut every connection now, and close every new one for ``down_for`` seconds: the
        client is cut off from a Redis that others still reach (a network partition)."""
        with self._lock:
            self._down_until = time.monotonic() + down_for
        self._drop_all()

    def stall(self, for_: float) -> None:
        """Hold what the client sends for ``for_`` seconds from now, then pass it on: a Redis
        that answers nothing for a while (a slow disk under its append-only file, say)."""
        with self._lock:
            self._stalled_until = time.monotonic() + for_

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self._drop_all()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            try:
                server = socket.create_connection(self._target, timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if upstream and self._take(chunk):
                    sink.sendall(chunk)  # Redis runs it...
                    time.sleep(0.05)  # ...and answers into connections about to close
                    self._drop_all()
                    self.cut.set()
                    return
                if upstream:
                    time.sleep(max(0.0, self._stalled_until - time.monotonic()))
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.close()
                except OSError:
                    pass

    def _take(self, chunk: bytes) -> bool:
        with self._lock:
            if self._marker is None or self._marker not in chunk:
                return False
            self._marker = None
            self._down_until = time.monotonic() + self._down_for
            # From here no answer goes back: the connections close before Redis' reply is
            # read from them.
            for client, _ in self._pairs:
                try:
                    client.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            return True

    def _drop_all(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                try:
                    sock.close()
                except OSError:
                    pass
