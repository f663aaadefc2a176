"""A small xenstored for tests: serves a dict tree over one end of a socketpair.

It speaks the wire format on its own (it does not use the code under test to parse), and
behaves as xenstored does where our client must cope: it fires every new watch once at
registration, may answer requests out of order, may refuse commits with EAGAIN, and can be
told to leave some requests unanswered, or to answer them late. `connect()` adds another
domain's connection to the same store (a fake back end's): every connection's watches fire
for changes made through any of them.
"""

from __future__ import annotations

import socket
import struct

from unikernel.core.scheduler import wait_readable

HEADER = struct.Struct("<IIII")
DIRECTORY, READ, WATCH, UNWATCH, TX_START, TX_END = 1, 2, 4, 5, 6, 7
WRITE, MKDIR, RM, WATCH_EVENT, ERROR = 11, 12, 13, 15, 16


def message(kind: int, req_id: int, payload: bytes, tx: int = 0) -> bytes:
    return HEADER.pack(kind, req_id, tx, len(payload)) + payload


class FakeXenstored:
    def __init__(
        self,
        sock: socket.socket,
        tree: dict[str, str] | None = None,
        *,
        domid: int = 7,
        hold: int = 1,
        event_first: bool = False,
        eagain_commits: int = 0,
        silent: frozenset[str] = frozenset(),
        late: frozenset[str] = frozenset(),
    ) -> None:
        self.sock = sock
        sock.setblocking(False)
        self.domid = domid
        self.tree: dict[str, str] = {self.absolute(k): v for k, v in (tree or {}).items()}
        self.hold = hold  # answer only once this many requests wait, last first
        self.event_first = event_first  # a new watch's event before the WATCH reply
        self.eagain_commits = eagain_commits  # commits to refuse with EAGAIN
        self.silent = silent  # paths whose requests are never answered
        self.late = late  # paths whose requests are answered just before the next one's
        self.watches: list[tuple[str, str]] = []
        self.transactions: dict[int, dict[str, str]] = {}
        self.next_tx = 41
        self.requests: list[tuple[int, bytes, int]] = []  # (type, payload, tx) as received
        self.commits = 0
        self.aborts = 0
        self.held: list[bytes] = []
        self.delayed: list[bytes] = []
        self.peers: list[FakeXenstored] = [self]  # connections to the same store

    def connect(self, sock: socket.socket, *, domid: int = 0) -> FakeXenstored:
        """Another connection to this store, from domain `domid`; serve() it too."""
        peer = FakeXenstored(sock, domid=domid)
        peer.tree = self.tree
        peer.peers = self.peers
        self.peers.append(peer)
        return peer

    def broadcast(self, path: str) -> None:
        """Fire the other connections' watches for a change at `path` (ours: see fire)."""
        changed = self.absolute(path)
        for peer in self.peers:
            if peer is not self:
                events = peer.fire(changed)
                if events:
                    peer.sock.sendall(events)

    def absolute(self, path: str) -> str:
        return path if path.startswith("/") else f"/local/domain/{self.domid}/{path}"

    async def serve(self) -> None:
        buffer = b""
        while True:
            await wait_readable(self.sock.fileno())
            data = self.sock.recv(65536)
            if not data:
                return
            buffer += data
            while len(buffer) >= HEADER.size:
                kind, req_id, tx, length = HEADER.unpack_from(buffer)
                if len(buffer) < HEADER.size + length:
                    break
                payload = buffer[HEADER.size : HEADER.size + length]
                buffer = buffer[HEADER.size + length :]
                self.requests.append((kind, payload, tx))
                self.answer(kind, req_id, tx, payload)

    def answer(self, kind: int, req_id: int, tx: int, payload: bytes) -> None:
        fields = payload.split(b"\0")
        path = fields[0].decode()
        if path in self.silent:
            return
        out = self.handle(kind, req_id, tx, payload, path, fields)
        if path in self.late:
            self.delayed.append(out)
            return
        self.held.append(self.delayed.pop() + out if self.delayed else out)
        if len(self.held) >= self.hold:
            self.sock.sendall(b"".join(reversed(self.held)))
            self.held.clear()

    def handle(
        self, kind: int, req_id: int, tx: int, payload: bytes, path: str, fields: list[bytes]
    ) -> bytes:
        def ok() -> bytes:
            return message(kind, req_id, b"OK\0", tx)

        def error(name: str) -> bytes:
            return message(ERROR, req_id, name.encode() + b"\0", tx)

        if tx and tx not in self.transactions:
            return error("ENOENT")
        tree = self.transactions[tx] if tx else self.tree
        node = self.absolute(path) if path else ""
        if kind == READ:
            if node in tree:
                return message(READ, req_id, tree[node].encode(), tx)
            return message(READ, req_id, b"", tx) if self.children(tree, node) else error("ENOENT")
        if kind == DIRECTORY:
            names = self.children(tree, node)
            if not names and node not in tree:
                return error("ENOENT")
            return message(DIRECTORY, req_id, b"".join(n.encode() + b"\0" for n in names), tx)
        if kind == WRITE:
            tree[node] = payload[len(fields[0]) + 1 :].decode()
            return ok() + (b"" if tx else self.fire_all(path))
        if kind == MKDIR:
            tree.setdefault(node, "")
            return ok() + (b"" if tx else self.fire_all(path))
        if kind == RM:
            gone = [k for k in tree if k == node or k.startswith(node + "/")]
            for k in gone:
                del tree[k]
            return ok() + (b"" if tx else self.fire_all(path))
        if kind == WATCH:
            token = fields[1].decode()
            self.watches.append((path, token))
            event = message(WATCH_EVENT, 0, f"{path}\0{token}\0".encode())
            return event + ok() if self.event_first else ok() + event
        if kind == UNWATCH:
            self.watches.remove((path, fields[1].decode()))
            return ok()
        if kind == TX_START:
            self.next_tx += 1
            self.transactions[self.next_tx] = dict(self.tree)
            return message(TX_START, req_id, b"%d\0" % self.next_tx)
        if kind == TX_END:
            changes = self.transactions.pop(tx)
            if payload == b"F\0":
                self.aborts += 1
                return ok()
            if self.eagain_commits:
                self.eagain_commits -= 1
                return error("EAGAIN")
            self.commits += 1
            changed = [
                k for k in changes.keys() | self.tree.keys() if changes.get(k) != self.tree.get(k)
            ]
            self.tree.clear()  # in place: other connections share it
            self.tree.update(changes)
            return ok() + b"".join(self.fire_all(k) for k in changed)
        return error("EINVAL")

    @staticmethod
    def children(tree: dict[str, str], node: str) -> list[str]:
        prefix = node.rstrip("/") + "/"
        return sorted({k[len(prefix) :].split("/")[0] for k in tree if k.startswith(prefix)})

    def fire(self, path: str) -> bytes:
        """The events of a change at `path`, for every watch at or above it."""
        changed = self.absolute(path)
        out = b""
        for watched, token in self.watches:
            node = self.absolute(watched)
            if changed == node or changed.startswith(node + "/"):
                out += message(WATCH_EVENT, 0, f"{path}\0{token}\0".encode())
        return out

    def fire_all(self, path: str) -> bytes:
        """Our events for a change at `path` (returned, to follow the reply), the other
        connections' sent."""
        self.broadcast(path)
        return self.fire(path)

    def change(self, path: str, value: str) -> None:
        """Another domain writes `path`."""
        self.tree[self.absolute(path)] = value
        self.sock.sendall(self.fire_all(path))
