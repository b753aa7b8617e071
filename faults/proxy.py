"""Faults a test can inject: a TCP proxy that takes a service away and gives it back."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time


def _ephemeral_low() -> int:
    """The lowest port the kernel picks for outgoing connections (Linux; else 32768)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class TcpProxy:
    """Forwards <host>:<port> (127.0.0.1 unless told) to `upstream` until `cut()`, which
    closes every connection and refuses new ones (the service is "down"); `restore()` listens
    again on the same port. Workers given the proxy's address lose their database exactly as
    in an outage."""

    def __init__(self, upstream: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.host = host  # the address it listens on
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.port = 0

    def start(self) -> TcpProxy:
        """Listen: first on a free port below the kernel's ephemeral range (a port the OS
        hands out could be taken by some outgoing connection while the proxy is cut, and
        `restore()` could not listen there again), then on the same port."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.port:
            listener.bind((self.host, self.port))
        else:
            self._bind_fixed(listener)
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _bind_fixed(self, listener: socket.socket) -> None:
        low = _ephemeral_low()
        for port in random.sample(range(max(1024, low - 12000), low), 200):
            try:
                listener.bind((self.host, port))
                return
            except OSError:
                continue
        listener.bind((self.host, 0))  # nothing free there: any port

    def cut(self) -> None:
        """The service is gone: its connections reset, new ones refused."""
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, set()
        if listener is not None:
            # close() alone leaves the socket listening while _accept's thread is blocked
            # in accept() on it (the syscall holds it), and restore() could not listen
            # there again; shutdown() wakes that accept() first.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def restore(self) -> None:
        """Listen again on the same port (retried while the old socket is let go)."""
        deadline = time.monotonic() + 10
        while True:
            try:
                self.start()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._connections |= {client, server}
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for conn in (source, target):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
