"""The hosted target's socket mode: the application's TCP over the host kernel's sockets.

    UNIKERNEL_NETWORK=sockets      (the launcher sets it; see unikernel.net.device)
    network = await devices.network().open_streams()

The same calls as our own stack's (unikernel.net.streams), on non-blocking kernel sockets
waited on by our scheduler's epoll loop: the application's threads, HTTP and app code are
unchanged, and only TCP/IP is Linux's. Listening sockets bind the address of UNIKERNEL_IP if
it is given, else every address. Only hosted builds carry this module (the wiring imports it
there): an image under QEMU or Xen has no host kernel to lend it sockets.
"""

from __future__ import annotations

import _socket  # not `socket`, which imports enum
import errno
import struct

from unikernel.core.scheduler import fail_after_or_never, sleep, wait_readable, wait_writable
from unikernel.core.sync import Lock
from unikernel.net.ipv4 import format_address, parse_address

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    Buffer = bytes | bytearray | memoryview

_SIOCOUTQ = 0x5411  # bytes in the send queue not yet acknowledged (TIOCOUTQ)
_DRAIN_POLL = 0.001  # seconds between looks at that queue
_WOULD_BLOCK = (BlockingIOError, InterruptedError)


class HostSocket:
    """A connected kernel socket, for our threads: the calls of tcp_sockets.TcpSocket."""

    __slots__ = ("_fd", "_sock", "remote")

    def __init__(self, sock: _socket.socket, remote: tuple[bytes, int]) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self.remote = remote

    def __repr__(self) -> str:
        return f"<HostSocket fd {self._fd} to {self.remote!r}>"

    @property
    def nodelay(self) -> bool:
        return bool(self._sock.getsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY))

    @nodelay.setter
    def nodelay(self, value: bool) -> None:
        self._sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, int(value))

    async def send(self, data: Buffer, timeout: float | None = None) -> None:
        """Send all of `data`, waiting while the kernel's buffer is full."""
        view = memoryview(data)
        sock = self._sock
        with fail_after_or_never(timeout):
            while view:
                try:
                    view = view[sock.send(view) :]
                except _WOULD_BLOCK:
                    await wait_writable(self._fd)

    async def recv(self, max_bytes: int = 65536, timeout: float | None = None) -> bytes:
        """Up to `max_bytes`, waiting until some arrive; b"" once the peer has closed."""
        sock = self._sock
        with fail_after_or_never(timeout):
            while True:
                try:
                    return sock.recv(max_bytes)
                except _WOULD_BLOCK:
                    await wait_readable(self._fd)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until the peer has acknowledged everything sent."""
        import fcntl

        with fail_after_or_never(timeout):
            while True:
                queued = struct.unpack("i", fcntl.ioctl(self._fd, _SIOCOUTQ, b"\0" * 4))[0]
                if not queued:
                    return
                await sleep(_DRAIN_POLL)

    def shutdown(self) -> None:
        """Send a FIN after the queued data; recv() goes on working."""
        try:
            self._sock.shutdown(_socket.SHUT_WR)
        except OSError as error:
            if error.errno != errno.ENOTCONN:
                raise

    def close(self) -> None:
        """Close gracefully: the kernel sends what is queued, then the FIN."""
        self._sock.close()

    def abort(self) -> None:
        """Reset the connection at once (a zero linger time makes close() send RST)."""
        try:  # noqa: SIM105 (contextlib is heavy for the image)
            self._sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass  # closed already
        self._sock.close()


class HostListener:
    """A listening kernel socket, for our threads."""

    __slots__ = ("_accepting", "_fd", "_sock", "port")

    def __init__(self, sock: _socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self.port: int = sock.getsockname()[1]
        # The scheduler lets one thread wait on a descriptor: accepters take turns, in order.
        self._accepting = Lock()

    async def accept(self, timeout: float | None = None) -> HostSocket:
        """The next connection, waiting for one; threads accepting at once are served in turn."""
        with fail_after_or_never(timeout):
            async with self._accepting:
                while True:
                    try:
                        fd, (host, port) = self._sock._accept()  # type: ignore[attr-defined]
                    except _WOULD_BLOCK:
                        await wait_readable(self._fd)
                        continue
                    except OSError as error:
                        if error.errno in (errno.ECONNABORTED, errno.EPROTO):
                            continue  # reset before we took it: the next one
                        raise
                    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM, 0, fd)
                    return HostSocket(sock, (parse_address(host), port))

    def close(self) -> None:
        self._sock.close()


class HostNetwork:
    """TCP over the host kernel: the calls of NetworkService that stream applications use."""

    def __init__(self, bind_address: str = "0.0.0.0") -> None:
        self.bind_address = bind_address
        self._open: list[HostListener] = []

    @property
    def address(self) -> str:
        return self.bind_address

    def listen(self, port: int, backlog: int = 128) -> HostListener:
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        try:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            sock.bind((self.bind_address, port))
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        listener = HostListener(sock)
        self._open.append(listener)
        return listener

    async def connect(self, host: str, port: int, timeout: float | None = None) -> HostSocket:
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            with fail_after_or_never(timeout):
                error = sock.connect_ex((host, port))
                if error == errno.EINPROGRESS:
                    await wait_writable(sock.fileno())
                    error = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
            if error:
                raise OSError(error, f"connect to {host}:{port}: {errno.errorcode.get(error)}")
        except BaseException:
            sock.close()
            raise
        return HostSocket(sock, (parse_address(host), port))

    async def aclose(self) -> None:
        """Close the listening sockets; connections are their threads' to close."""
        for listener in self._open:
            listener.close()
        self._open.clear()


def open_host_network(environ: Mapping[str, str]) -> HostNetwork:
    """The socket mode's network: bound to UNIKERNEL_IP's address if given, else to all."""
    from unikernel.net.service import ipv4_config

    config = ipv4_config(environ)
    if config is None:
        return HostNetwork()
    return HostNetwork(format_address(config.address))
