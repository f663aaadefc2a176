"""The hosted socket mode's TCP (net/host_sockets.py): our threads on the host kernel's
sockets, with the calls and errors of our own stack's sockets, against Python's blocking
sockets on loopback."""

from __future__ import annotations

import socket
import threading

import pytest

from unikernel.core.scheduler import run, sleep, spawn
from unikernel.devices import Network
from unikernel.net.device import NETWORK_VARIABLE, NetworkDevice
from unikernel.net.host_sockets import HostNetwork, open_host_network
from unikernel.net.service import NetworkConfigError


def test_accept_send_and_receive_with_a_blocking_client() -> None:
    network = HostNetwork("127.0.0.1")
    listener = network.listen(0)
    received: list[bytes] = []

    def client() -> None:
        with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as sock:
            sock.sendall(b"hello")
            while chunk := sock.recv(65536):
                received.append(chunk)

    thread = threading.Thread(target=client)
    thread.start()

    async def main() -> bytes:
        sock = await listener.accept(timeout=5)
        assert sock.remote[0] == b"\x7f\x00\x00\x01"
        assert not sock.nodelay  # Nagle on, as the kernel's default, until asked
        sock.nodelay = True
        assert sock.nodelay
        data = await sock.recv(timeout=5)
        await sock.send(b"x" * 3_000_000, timeout=10)  # more than the kernel's buffer holds
        await sock.drain(timeout=10)
        sock.close()
        await network.aclose()
        return data

    assert run(main) == b"hello"
    thread.join(5)
    assert b"".join(received) == b"x" * 3_000_000


def test_connect_recv_eof_and_timeouts() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def peer() -> None:
        conn, _ = server.accept()
        conn.sendall(b"bye")
        conn.close()

    thread = threading.Thread(target=peer)
    thread.start()

    async def main() -> tuple[bytes, bytes]:
        network = HostNetwork("127.0.0.1")
        sock = await network.connect("127.0.0.1", port, timeout=5)
        first = await sock.recv(timeout=5)
        await sleep(0.05)
        rest = await sock.recv(timeout=5)  # b"": the peer closed
        sock.close()
        return first, rest

    assert run(main) == (b"bye", b"")
    thread.join(5)
    server.close()


def test_accept_times_out_and_a_refused_connect_says_so() -> None:
    async def main() -> None:
        network = HostNetwork("127.0.0.1")
        listener = network.listen(0)
        with pytest.raises(TimeoutError):
            await listener.accept(timeout=0.05)
        port = listener.port
        listener.close()
        with pytest.raises(OSError, match="ECONNREFUSED"):
            await network.connect("127.0.0.1", port, timeout=5)

    run(main)


def test_abort_resets_the_peer() -> None:
    network = HostNetwork("127.0.0.1")
    listener = network.listen(0)
    outcome: list[BaseException | bytes] = []

    def client() -> None:
        with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as sock:
            sock.sendall(b"x")
            try:
                outcome.append(sock.recv(10))
            except OSError as error:
                outcome.append(error)

    thread = threading.Thread(target=client)
    thread.start()

    async def main() -> None:
        sock = await listener.accept(timeout=5)
        await sock.recv(timeout=5)
        sock.abort()

    run(main)
    thread.join(5)
    assert isinstance(outcome[0], ConnectionResetError)


def test_many_threads_serve_many_clients_at_once() -> None:
    network = HostNetwork("127.0.0.1")
    listener = network.listen(0, backlog=64)
    clients = 20
    echoes: list[bytes] = []

    def client(index: int) -> None:
        with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as sock:
            sock.sendall(f"{index}".encode())
            echoes.append(sock.recv(100))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()

    async def echo_one() -> None:
        sock = await listener.accept(timeout=10)
        data = await sock.recv(timeout=10)
        await sleep(0.01)  # all of them wait at once
        await sock.send(data)
        sock.close()

    async def main() -> None:
        workers = [spawn(echo_one) for _ in range(clients)]
        for worker in workers:
            await worker.join()

    run(main)
    for thread in threads:
        thread.join(5)
    assert sorted(echoes) == sorted(f"{i}".encode() for i in range(clients))


def test_threads_waiting_to_accept_before_anyone_connects_each_get_one() -> None:
    network = HostNetwork("127.0.0.1")
    listener = network.listen(0)
    clients = 5
    served: list[int] = []

    async def accept_one() -> None:
        sock = await listener.accept(timeout=10)
        served.append(int(await sock.recv(timeout=10)))
        sock.close()

    def connect_all() -> None:
        for index in range(clients):
            with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as sock:
                sock.sendall(f"{index}".encode())
                sock.recv(1)  # until the accepter closes it

    async def main() -> None:
        workers = [spawn(accept_one) for _ in range(clients)]
        await sleep(0.05)  # every worker is waiting before the first client comes
        connector = threading.Thread(target=connect_all)
        connector.start()
        for worker in workers:
            await worker.join()
        connector.join(10)

    run(main)
    assert sorted(served) == list(range(clients))


def test_the_mode_comes_from_the_environment() -> None:
    assert open_host_network({}).address == "0.0.0.0"
    assert open_host_network({"UNIKERNEL_IP": "127.0.0.2/32"}).address == "127.0.0.2"

    def no_netif() -> object:
        raise AssertionError("socket mode opens no frame device")

    hosted = NetworkDevice(Network(), no_netif, open_host_network)  # type: ignore[arg-type]
    in_vm = NetworkDevice(Network(), no_netif)  # type: ignore[arg-type]

    async def main() -> None:
        network = await hosted.open_streams(environ={NETWORK_VARIABLE: "sockets"})
        assert isinstance(network, HostNetwork)
        with pytest.raises(NetworkConfigError, match="only a hosted build"):
            await in_vm.open_streams(environ={NETWORK_VARIABLE: "sockets"})
        with pytest.raises(NetworkConfigError, match="say stack or sockets"):
            await hosted.open_streams(environ={NETWORK_VARIABLE: "kernel"})

    run(main)
