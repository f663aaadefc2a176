"""What a stream (TCP) application needs from the network, whichever TCP carries it.

    network = await devices.network().open_streams()
    listener = network.listen(80)
    sock = await listener.accept()

Our own stack (unikernel.net.service.NetworkService, over tcp_sockets) provides it, and so
does the host kernel's TCP (unikernel.net.host_sockets, the hosted target's socket mode, as
Mirage's unix backend can use the socket stack): the same application code then runs on
either, which separates the cost of our stack from the cost of the code above it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    Buffer = bytes | bytearray | memoryview

    class StreamSocket(Protocol):
        @property
        def remote(self) -> tuple[bytes, int]: ...

        nodelay: bool  # segments go out at once, not held back by Nagle's algorithm

        async def send(self, data: Buffer, timeout: float | None = None) -> None: ...

        async def recv(self, max_bytes: int = 65536, timeout: float | None = None) -> bytes: ...

        async def drain(self, timeout: float | None = None) -> None: ...

        def shutdown(self) -> None: ...

        def close(self) -> None: ...

        def abort(self) -> None: ...

    class StreamListener(Protocol):
        @property
        def port(self) -> int: ...

        async def accept(self, timeout: float | None = None) -> StreamSocket: ...

        def close(self) -> None: ...

    class StreamNetwork(Protocol):
        @property
        def address(self) -> str: ...

        def listen(self, port: int, backlog: int = 128) -> StreamListener: ...

        async def connect(
            self, host: str, port: int, timeout: float | None = None
        ) -> StreamSocket: ...

        async def aclose(self) -> None: ...
