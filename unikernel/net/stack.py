"""One network interface's protocols joined together: still sans-IO.

A Stack owns an interface's MAC address and IPv4 configuration. A driver feeds it received
frames and the time, and transmits what it produces:

    stack.receive(frame, now)       # for every received frame, or
    stack.receive_batch(frames, now, vouched)   # for frames read together
    stack.tick(now)                 # at stack.next_deadline(), or more often
    frames = stack.take_frames()    # after either (and after anything an application does)

It answers ARP and ICMP echo requests by itself, reassembles fragments, runs the DHCP client
if started, and counts every frame it drops by reason (drop_counts()). Applications reach UDP
through udp_bind()/udp_send() (or the sockets module above this one).

Transport protocols plug in by IP protocol number; TCP (6) is one:

    send = stack.register_protocol(6, receive, tick=tick, next_deadline=next_deadline)

- `receive(source, destination, segment, now, vouched)` gets each datagram of that protocol
  addressed to us: `source` and `destination` are 4-byte addresses, `segment` a memoryview of
  the IP payload, valid only during the call (copy what you keep), fragments already
  reassembled and the IP header checked. The transport checks its own checksum (it is right
  when `ipv4.checksum(segment, ipv4.pseudo_header_sum(source, destination, 6, len(segment)))`
  is 0), unless `vouched`: the link vouched for it (see receive()).
- `send(destination, payload, now) -> bool` sends `payload` (any bytes-like, copied once into
  the frame) as one datagram from our address; the stack routes, resolves the next hop with
  ARP (holding the packet meanwhile) and fragments if needed. False: dropped at once (no
  address yet, no route). It is `stack.send_ipv4(protocol, destination, payload, now)`.
- `tick(now)` (optional) is called by every stack.tick(), and `next_deadline()` (optional,
  float or None) tells the driver when the transport next needs one.
- `batch=(begin, end)` (optional): receive_batch() calls begin() before its frames and
  end(now) after them, so that a transport may answer what arrived together at once.
- `run(source, destination, payloads, vouched, now)` (optional): receive_batch() hands it,
  in place of a receive() each, the consecutive datagrams of that protocol between the same
  two addresses that a read brought (a bulk transfer's, mostly), bit i of `vouched` as
  receive()'s `vouched` for payloads[i]; the views stay valid until the batch ends. Frames
  of anything else between them keep their place: the run ends before them.
- `stack.address` is our address (None while unconfigured); `stack.mtu` bounds datagrams
  (an MSS of mtu - 40). Frames a handler makes go out with the driver's next take_frames().
"""

from __future__ import annotations

import struct

from unikernel.core.entropy import random_below
from unikernel.net import dhcp, ethernet, icmp, ipv4, udp
from unikernel.net.arp import ArpEngine
from unikernel.net.ipv4 import ANY, BROADCAST, HEADER_LEN
from unikernel.net.malformed import Malformed
from unikernel.net.reassembly import Reassembler
from unikernel.net.segmentation import HEADROOM, LargeSegment

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from unikernel.net.config import Ipv4Config
    from unikernel.net.dhcp import Outgoing

    Buffer = bytes | bytearray | memoryview
    Receive = Callable[[bytes, bytes, memoryview, float, bool], None]
    ReceiveRun = Callable[[bytes, bytes, list[memoryview], int, float], None]
    Send = Callable[[bytes, Buffer, float], bool]
    Tick = Callable[[float], object]
    Deadline = Callable[[], float | None]
    BatchBegin = Callable[[], object]
    BatchEnd = Callable[[float], object]
    # (source address, sequence, data view, now)
    EchoHandler = Callable[[bytes, int, memoryview, float], None]

# What receive()'s fast path reads of a frame, in one step: the destination MAC, the EtherType,
# IPv4's version and header length, total length, flags and fragment offset, protocol, source
# and destination (the source MAC, TOS, ident, TTL and checksum are skipped).
_ETHERNET_IPV4 = struct.Struct("!6s6xHBxH2xHxB2x4s4s")
_IP_AT = ethernet.HEADER_LEN
_TRANSPORT_AT = ethernet.HEADER_LEN + HEADER_LEN
_PLAIN_IPV4 = 0x45  # version 4, a header of five words: no options
_FRAGMENT_BITS = 0x3FFF  # more fragments, and the offset
_MAX_REMEMBERED = 256  # next hops and Ethernet headers kept for sending; then forgotten at once


class Stack:
    def __init__(
        self,
        mac: bytes,
        *,
        mtu: int = 1500,
        config: Ipv4Config | None = None,
        segmentation: bool = False,
    ) -> None:
        if len(mac) != 6 or ethernet.is_group(mac):
            raise ValueError("an interface needs a unicast MAC address")
        self.mac = mac
        self.mtu = mtu
        self.segmentation = segmentation  # the link cuts TCP's large segments (TSO)
        self.super_frames_sent = 0  # large segments sent whole, for the link to cut
        self.config: Ipv4Config | None = None
        self.arp = ArpEngine(mac)
        self.reassembler = Reassembler()
        self.udp = udp.Demux()
        self.dhcp: dhcp.DhcpClient | None = None
        self.frames_received = 0
        self.frames_sent = 0
        self.dropped: dict[str, int] = {}
        self._frames: list[bytes | bytearray] = []  # SuperFrames are bytearrays
        self._protocols: dict[int, Receive] = {}
        self._runs: dict[int, ReceiveRun] = {}
        self._timers: list[tuple[Tick | None, Deadline | None]] = []
        self._batch_hooks: list[tuple[BatchBegin, BatchEnd]] = []
        self._echo_handlers: dict[int, EchoHandler] = {}
        self._ident = random_below(0x10000)
        # What sending the next datagram to a destination asks again: its next hop (for the
        # configuration it was found with), and the Ethernet header to that hop's MAC.
        self._next_hops: dict[bytes, bytes] = {}
        self._next_hops_config: Ipv4Config | None = None
        self._link_headers: dict[bytes, bytes] = {}
        if config is not None:
            self.configure(config)

    # Configuration.

    @property
    def address(self) -> bytes | None:
        return None if self.config is None else self.config.address

    def configure(self, config: Ipv4Config | None) -> None:
        """Take an address (announced with a gratuitous ARP), or give it up (None)."""
        self.config = config
        self.arp.address = None if config is None else config.address
        if config is not None:
            self._frames.append(self.arp.announce())

    def start_dhcp(self, now: float, hostname: str | None = None) -> None:
        """Get the configuration from a DHCP server; `config` is set once a lease is bound."""
        if self.dhcp is None:
            self.udp.bind(dhcp.CLIENT_PORT, self._receive_dhcp)
        self.dhcp = dhcp.DhcpClient(self.mac, hostname=hostname)
        self._follow_dhcp(self.dhcp.start(now), now)

    def stop_dhcp(self, now: float) -> None:
        """Release the lease, if any, and drop the address."""
        client = self.dhcp
        if client is None:
            return
        self._send_dhcp(client.release(), now)  # from the address being released
        self.dhcp = None
        self.udp.unbind(dhcp.CLIENT_PORT)
        self.configure(None)

    # What the driver calls.

    def receive(self, frame: Buffer, now: float, vouched: bool = False) -> None:
        """`vouched`: the link vouched for the TCP checksum of the segment the frame holds (a
        partial checksum from the local kernel, which Linux itself takes as checked)."""
        if not self._receive_fast(frame, now, vouched):
            self._receive_frame(frame, now, vouched)

    def _receive_fast(self, frame: Buffer, now: float, vouched: bool) -> bool:
        """A bulk transfer's frame, delivered in one step (see _fast_datagram()); False,
        having done nothing, for any other frame, which _receive_frame() takes the long way
        (and drops, if it must, with the reason)."""
        datagram = self._fast_datagram(frame)
        if datagram is None:
            return False
        protocol, source, destination, payload = datagram
        self._protocols[protocol](source, destination, payload, now, vouched)
        return True

    def _fast_datagram(self, frame: Buffer) -> tuple[int, bytes, bytes, memoryview] | None:
        """(protocol, source, destination, payload) of a frame that is a bulk transfer's: to
        our MAC, an IPv4 datagram without options or fragmentation to our address, for a
        registered transport, its header whole and right. None for any other frame."""
        if len(frame) < _TRANSPORT_AT:
            return None
        (
            destination_mac,
            ethertype,
            version_ihl,
            total_length,
            flags,
            protocol,
            source,
            destination,
        ) = _ETHERNET_IPV4.unpack_from(frame)
        config = self.config
        if (
            version_ihl != _PLAIN_IPV4
            or ethertype != ethernet.IPV4
            or flags & _FRAGMENT_BITS
            or config is None
            or destination != config.address
            or destination_mac != self.mac
            or not HEADER_LEN <= total_length <= len(frame) - _IP_AT
            or ipv4.is_group(source)
            or protocol not in self._protocols
            or not ipv4.plain_header_checks(frame, _IP_AT)
        ):
            return None
        self.frames_received += 1
        return (
            protocol,
            source,
            destination,
            memoryview(frame)[_TRANSPORT_AT : _IP_AT + total_length],
        )

    def _receive_frame(self, frame: Buffer, now: float, vouched: bool) -> None:
        self.frames_received += 1
        try:
            eth = ethernet.parse(frame)
        except Malformed as error:
            self._drop("ethernet", error.reason)
            return
        destination = eth.destination
        if destination != self.mac and destination != ethernet.BROADCAST:
            self._drop("ethernet", "not-for-us")  # another host's, or multicast we never join
        elif eth.ethertype == ethernet.IPV4:
            self._receive_ipv4(eth.payload, now, vouched)
        elif eth.ethertype == ethernet.ARP:
            try:
                self._frames += self.arp.receive(eth.payload, now)
            except Malformed as error:
                self._drop("arp", error.reason)
        else:
            self._drop("ethernet", "ethertype")

    def receive_batch(self, frames: Sequence[Buffer], now: float, vouched: int = 0) -> None:
        """Frames read together; bit i of `vouched` as receive()'s `vouched` for frames[i]."""
        hooks = self._batch_hooks
        for begin, _ in hooks:
            begin()
        datagram_of, slow, protocols, runs = (
            self._fast_datagram,
            self._receive_frame,
            self._protocols,
            self._runs,
        )
        # The run being gathered: consecutive datagrams of a protocol that takes runs, between
        # the same two addresses (`key`), with their `vouched` bits.
        run: list[memoryview] = []
        run_bits = 0
        key: tuple[int, bytes, bytes] = (-1, b"", b"")
        try:
            for index, frame in enumerate(frames):
                bit = vouched >> index & 1
                datagram = datagram_of(frame)
                in_run = datagram is not None and datagram[0] in runs
                if run and (not in_run or datagram[:3] != key):  # type: ignore[index]
                    runs[key[0]](key[1], key[2], run, run_bits, now)
                    run, run_bits = [], 0
                if datagram is None:
                    slow(frame, now, bit == 1)
                elif in_run:
                    key = datagram[:3]
                    run_bits |= bit << len(run)
                    run.append(datagram[3])
                else:
                    protocol, source, destination, payload = datagram
                    protocols[protocol](source, destination, payload, now, bit == 1)
            if run:
                runs[key[0]](key[1], key[2], run, run_bits, now)
        finally:
            for _, end in hooks:
                end(now)

    def tick(self, now: float) -> None:
        self._frames += self.arp.tick(now)
        self.reassembler.expire(now)
        if self.dhcp is not None:
            self._follow_dhcp(self.dhcp.tick(now), now)
        for tick, _ in self._timers:
            if tick is not None:
                tick(now)

    def next_deadline(self) -> float | None:
        """When tick() next has work to do; None: not until something is received or sent."""
        # Asked after every read and write of frames: a plain loop, no generator.
        earliest = self.arp.next_deadline()
        deadlines = [self.reassembler.next_deadline()]
        if self.dhcp is not None:
            deadlines.append(self.dhcp.next_deadline())
        for _, next_deadline in self._timers:
            if next_deadline is not None:
                deadlines.append(next_deadline())
        for deadline in deadlines:
            if deadline is not None and (earliest is None or deadline < earliest):
                earliest = deadline
        return earliest

    def take_frames(self) -> list[bytes | bytearray]:
        """The frames to transmit, oldest first; the stack forgets them."""
        frames, self._frames = self._frames, []
        self.frames_sent += len(frames)
        return frames

    def drop_counts(self) -> dict[str, int]:
        """Frames and packets dropped, by "layer.reason"."""
        counts = dict(self.dropped)
        for layer, dropped in (("arp", self.arp.dropped), ("ipv4", self.reassembler.dropped)):
            for reason, n in dropped.items():
                counts[f"{layer}.{reason}"] = counts.get(f"{layer}.{reason}", 0) + n
        return counts

    # Sending.

    def send_ipv4(
        self, protocol: int, destination: bytes, payload: Buffer, now: float, *, ttl: int = 64
    ) -> bool:
        """Send one datagram from our address; False if it was dropped at once."""
        config = self.config
        source = ANY if config is None else config.address
        next_hop = None
        if destination == BROADCAST or (config is not None and destination == config.broadcast):
            mac: bytes | None = ethernet.BROADCAST
        elif config is None:
            self._drop("ipv4", "no-address")
            return False
        elif destination == config.address:
            if type(payload) is LargeSegment:  # no link to cut it: cut here, as for ARP's queue
                return self._send_large(source, destination, payload, 0, None, now, ttl)
            packet = ipv4.build(source, destination, protocol, payload, self._next_ident(), ttl=ttl)
            self._receive_ipv4(memoryview(packet), now)  # loopback
            return True
        else:
            next_hop = self._next_hop(config, destination)
            if next_hop is None:
                self._drop("ipv4", "no-route")
                return False
            mac = self.arp.lookup(next_hop, now)
        ident = self._next_ident()
        if type(payload) is LargeSegment:
            return self._send_large(source, destination, payload, ident, mac, now, ttl)
        if mac is not None and len(payload) + HEADER_LEN <= self.mtu:
            # The common case: the frame is put together with one copy of the payload.
            header = ipv4.build_header(source, destination, protocol, len(payload), ident, ttl=ttl)
            ether = self._link_headers.get(mac) or self._link_header(mac)
            self._frames.append(b"".join((ether, header, payload)))
            return True
        for packet in ipv4.fragment(
            source, destination, protocol, payload, ident, self.mtu, ttl=ttl
        ):
            if mac is not None:
                self._frames.append(ethernet.build(mac, self.mac, ethernet.IPV4, packet))
            else:
                assert next_hop is not None
                self._frames += self.arp.queue(next_hop, packet, now)
        return True

    def _send_large(
        self,
        source: bytes,
        destination: bytes,
        segment: LargeSegment,
        ident: int,
        mac: bytes | None,
        now: float,
        ttl: int,
    ) -> bool:
        """TCP's large segment: whole, for the link to cut; else cut here (see segmentation)."""
        if mac is None or not self.segmentation:
            for piece in segment.segments(source, destination):
                self.send_ipv4(ipv4.TCP, destination, piece, now, ttl=ttl)
            return True
        header = ipv4.build_header(
            source,
            destination,
            ipv4.TCP,
            len(segment) - HEADROOM,
            ident,
            ttl=ttl,
            dont_fragment=True,
        )
        ether = self._link_headers.get(mac) or self._link_header(mac)
        # The segment becomes the frame: its headroom takes our headers, its data stays put.
        segment[: ethernet.HEADER_LEN] = ether
        segment[ethernet.HEADER_LEN : HEADROOM] = header
        segment.transport_start = HEADROOM
        segment.headers_len = HEADROOM + (segment[HEADROOM + 12] >> 4) * 4
        self._frames.append(segment)
        self.super_frames_sent += 1
        return True

    def _next_hop(self, config: Ipv4Config, destination: bytes) -> bytes | None:
        """Where a datagram to `destination` (not ours, nor a broadcast) goes: itself on our
        link, else the gateway; None without one."""
        hops = self._next_hops
        if self._next_hops_config is not config:
            hops.clear()  # configured since: every route may have changed
            self._next_hops_config = config
        hop = hops.get(destination)
        if hop is None:
            hop = destination if config.on_link(destination) else config.gateway
            if hop is not None:
                if len(hops) >= _MAX_REMEMBERED:
                    hops.clear()
                hops[destination] = hop
        return hop

    def _link_header(self, mac: bytes) -> bytes:
        """The Ethernet header of an IPv4 frame from us to `mac`, kept for the next ones."""
        headers = self._link_headers
        if len(headers) >= _MAX_REMEMBERED:
            headers.clear()
        header = headers[mac] = ethernet.header(mac, self.mac, ethernet.IPV4)
        return header

    def register_protocol(
        self,
        protocol: int,
        receive: Receive,
        *,
        tick: Tick | None = None,
        next_deadline: Deadline | None = None,
        batch: tuple[BatchBegin, BatchEnd] | None = None,
        run: ReceiveRun | None = None,
    ) -> Send:
        """Plug a transport in (see the module's docstring); returns its send function."""
        if protocol in (ipv4.ICMP, ipv4.UDP) or protocol in self._protocols:
            raise ValueError(f"IP protocol {protocol} is taken")
        self._protocols[protocol] = receive
        if run is not None:
            self._runs[protocol] = run
        if tick is not None or next_deadline is not None:
            self._timers.append((tick, next_deadline))
        if batch is not None:
            self._batch_hooks.append(batch)

        def send(destination: bytes, payload: Buffer, now: float) -> bool:
            return self.send_ipv4(protocol, destination, payload, now)

        return send

    # UDP and ICMP for applications.

    def udp_bind(self, port: int, handler: udp.Handler) -> int:
        """handler(source, source_port, destination, payload view, now) gets `port`'s
        datagrams; port 0 picks an ephemeral one. Returns the port."""
        return self.udp.bind(port, handler)

    def udp_unbind(self, port: int) -> None:
        self.udp.unbind(port)

    def udp_send(
        self,
        source_port: int,
        destination: bytes,
        destination_port: int,
        payload: Buffer,
        now: float,
    ) -> bool:
        source = ANY if self.config is None else self.config.address
        datagram = udp.build(source, destination, source_port, destination_port, payload)
        return self.send_ipv4(ipv4.UDP, destination, datagram, now)

    def bind_echo(self, ident: int, handler: EchoHandler) -> None:
        """handler(source, sequence, data view, now) gets echo replies with this identifier."""
        self._echo_handlers[ident] = handler

    def unbind_echo(self, ident: int) -> None:
        self._echo_handlers.pop(ident, None)

    def ping(self, destination: bytes, ident: int, sequence: int, data: Buffer, now: float) -> bool:
        return self.send_ipv4(ipv4.ICMP, destination, icmp.echo_request(ident, sequence, data), now)

    # Receiving.

    def _receive_ipv4(self, data: memoryview, now: float, vouched: bool = False) -> None:
        try:
            packet = ipv4.parse(data)
        except Malformed as error:
            self._drop("ipv4", error.reason)
            return
        if not self._accepts(packet.destination):
            self._drop("ipv4", "not-for-us")
            return
        if packet.is_fragment:
            try:
                whole = self.reassembler.add(packet, now)
            except Malformed as error:
                self._drop("ipv4", error.reason)
                return
            if whole is None:
                return
            packet = whole
            vouched = False  # for a piece, not the whole
        protocol = packet.protocol
        transport = self._protocols.get(protocol)
        if transport is not None:
            transport(packet.source, packet.destination, packet.payload, now, vouched)
        elif protocol == ipv4.UDP:
            self._receive_udp(packet, now)
        elif protocol == ipv4.ICMP:
            self._receive_icmp(packet, now)
        else:
            self._drop("ipv4", "protocol")

    def _accepts(self, destination: bytes) -> bool:
        config = self.config
        if config is None:
            # A DHCP server may send its offer to the very address it offers.
            return self.dhcp is not None or destination == BROADCAST
        return destination in (config.address, BROADCAST, config.broadcast)

    def _receive_udp(self, packet: ipv4.Packet, now: float) -> None:
        try:
            datagram = udp.parse(packet.payload, packet.source, packet.destination)
        except Malformed as error:
            self._drop("udp", error.reason)
            return
        handler = self.udp.handler(datagram.destination_port)
        if handler is None:
            self._drop("udp", "no-port")
            if packet.destination == self.address:
                quote = b"".join((packet.header, packet.payload[:8]))
                message = icmp.unreachable(icmp.PORT_UNREACHABLE, quote)
                self.send_ipv4(ipv4.ICMP, packet.source, message, now)
            return
        handler(packet.source, datagram.source_port, packet.destination, datagram.payload, now)

    def _receive_icmp(self, packet: ipv4.Packet, now: float) -> None:
        try:
            message = icmp.parse(packet.payload)
        except Malformed as error:
            self._drop("icmp", error.reason)
            return
        if message.type == icmp.ECHO_REQUEST:
            if packet.destination != self.address:
                self._drop("icmp", "broadcast-echo")  # no smurf amplifier, as Linux by default
                return
            self.send_ipv4(ipv4.ICMP, packet.source, icmp.echo_reply(message), now)
        elif message.type == icmp.ECHO_REPLY:
            handler = self._echo_handlers.get(message.ident)
            if handler is None:
                self._drop("icmp", "unexpected-reply")
            else:
                handler(packet.source, message.sequence, message.body, now)
        else:
            self._drop("icmp", "type")  # errors are not passed up to transports yet

    def _receive_dhcp(
        self, source: bytes, source_port: int, destination: bytes, payload: memoryview, now: float
    ) -> None:
        client = self.dhcp
        if client is None or source_port != dhcp.SERVER_PORT:
            return
        try:
            outgoing = client.receive(payload, now)
        except Malformed as error:
            self._drop("dhcp", error.reason)
            return
        self._follow_dhcp(outgoing, now)

    def _follow_dhcp(self, outgoing: list[Outgoing], now: float) -> None:
        """Take the client's configuration (before sending, so that a DISCOVER after a lost
        lease goes out from 0.0.0.0), then send its messages."""
        assert self.dhcp is not None
        lease = self.dhcp.lease
        config = None if lease is None else lease.config
        if config != self.config:
            self.configure(config)
        self._send_dhcp(outgoing, now)

    def _send_dhcp(self, outgoing: list[Outgoing], now: float) -> None:
        for destination, message in outgoing:
            self.udp_send(dhcp.CLIENT_PORT, destination, dhcp.SERVER_PORT, message, now)

    def _next_ident(self) -> int:
        self._ident = (self._ident + 1) & 0xFFFF
        return self._ident

    def _drop(self, layer: str, reason: str) -> None:
        key = f"{layer}.{reason}"
        self.dropped[key] = self.dropped.get(key, 0) + 1
