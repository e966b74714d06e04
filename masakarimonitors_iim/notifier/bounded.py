"""HTTP requests with a total deadline and a cap on what is read.

requests (and so keystoneauth) applies its timeout to each socket
operation, and reads a body whole: a server trickling one byte a second
holds a request as long as it likes (a 2 s request took 10.8 s, and could
take forever), and a 20 MB error page costs 20 MB and more. The sender
thread must neither hang nor bloat on a misbehaving endpoint.

How: a :func:`deadline` block arms one timer. The urllib3 connections
that this thread uses inside the block (the classes below, mounted on a
keystoneauth session by :func:`install`) register with it; when the timer
fires their sockets are shut down, which wakes a send or receive blocked
on them at once, and the request fails. :func:`read_capped` reads at most
a given number of bytes of a streamed body and closes the rest.

The TLS handshake runs before the connection's socket is visible, so it
is bounded per operation only (by the remaining time at connect).
Generic: nothing here knows Masakari.
"""
from __future__ import annotations

from collections.abc import Iterator
import contextlib
import socket
import threading
import time
from typing import Any

from keystoneauth1 import session as ks_session
import requests
from urllib3.connection import HTTPConnection
from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.connectionpool import HTTPSConnectionPool

_local = threading.local()


class Watch:
    """One deadline and the connections used under it.

    ``sent`` says whether the last request started under it was written
    out completely: a failure before that cannot have reached the server.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self._end = time.monotonic() + self.seconds
        self._lock = threading.Lock()
        self._conns: list[Any] = []
        self._closed = False
        self.expired = False
        self.sent = False

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def attach(self, conn: Any) -> None:
        with self._lock:
            if self.expired:
                raise TimeoutError("deadline of %gs exceeded" % self.seconds)
            if not any(c is conn for c in self._conns):
                self._conns.append(conn)

    def expire(self) -> None:
        """Timer thread: shut down every socket in use, under the lock so a
        block that has just ended never has a reused connection cut."""
        with self._lock:
            if self._closed:
                return
            self.expired = True
            for conn in self._conns:
                _shutdown(getattr(conn, "sock", None))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._conns.clear()


def _shutdown(sock: Any) -> None:
    if sock is None:
        return
    try:
        # The plain socket call, also on an SSLSocket: SSLSocket.shutdown
        # would drop its SSL object under the reading thread's feet.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, TypeError):
        pass    # already closed, or detached during a TLS handshake


def current() -> Watch | None:
    """The deadline of the block this thread is in, if any."""
    return getattr(_local, "watch", None)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[Watch]:
    """Everything sent and read in the block ends within ``seconds``."""
    watch = Watch(seconds)
    outer = current()
    _local.watch = watch
    timer = threading.Timer(watch.seconds, watch.expire)
    timer.daemon = True
    timer.start()
    try:
        yield watch
    finally:
        watch.close()
        timer.cancel()
        _local.watch = outer


def _starting(conn: Any) -> Watch | None:
    watch = current()
    if watch is not None:
        watch.attach(conn)
        watch.sent = False
    return watch


class _Watched(HTTPConnection):
    """Puts a connection under the current deadline's watch; the same for
    plain and TLS connections (HTTPSConnection derives from HTTPConnection)."""

    def connect(self) -> None:
        _starting(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        watch = _starting(self)
        super().request(*args, **kwargs)
        if watch is not None:
            watch.sent = True


class BoundedHTTPConnection(_Watched):
    pass


class BoundedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = BoundedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = BoundedHTTPSConnection


_POOLS: dict[str, Any] = {"http": _HTTPPool, "https": _HTTPSPool}


class BoundedAdapter(ks_session.TCPKeepAliveAdapter):
    """keystoneauth's own adapter (TCP keepalive), with bounded connections."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        if not proxy.lower().startswith("socks"):   # SOCKS has its own pools
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


def install(session: ks_session.Session) -> None:
    """Make every request of ``session`` honour :func:`deadline` blocks."""
    adapter = BoundedAdapter()
    session.session.mount("https://", adapter)
    session.session.mount("http://", adapter)


def read_capped(response: requests.Response, cap: int) -> tuple[bytes, bool]:
    """At most ``cap`` bytes of a streamed body, and whether there was more.

    The connection is closed rather than drained when the body is longer.
    """
    try:
        # Not decoded: we ask for identity, and a server that compresses
        # anyway must not turn a capped read into gigabytes (its answer
        # then fails to parse, like any unreadable answer).
        data = response.raw.read(cap + 1, decode_content=False) or b""
    finally:
        response.close()
    return data[:cap], len(data) > cap
