"""A scripted DHCP server for the tests: it offers one address, acknowledges requests for it,
and can be told to keep quiet or to refuse."""

from __future__ import annotations

from unikernel.net import dhcp
from unikernel.net.ipv4 import parse_address


class ScriptedServer:
    def __init__(
        self,
        address: str = "10.0.0.1",
        offer: str = "10.0.0.50",
        lease: int = 3600,
        options: list[tuple[int, bytes]] | None = None,
    ) -> None:
        self.address = parse_address(address)
        self.offer = parse_address(offer)
        self.lease = lease
        self.options = (
            options
            if options is not None
            else [
                (dhcp.SUBNET_MASK, parse_address("255.255.255.0")),
                (dhcp.ROUTER, self.address),
                (dhcp.DNS_SERVERS, parse_address("10.0.0.53") + parse_address("10.0.0.54")),
            ]
        )
        self.silent = 0  # how many of the next messages to ignore
        self.refuse = False  # answer requests with a NAK
        self.heard: list[dhcp.Message] = []

    def answer(self, data: bytes | memoryview) -> bytes | None:
        message = dhcp.parse(data)
        self.heard.append(message)
        if self.silent:
            self.silent -= 1
            return None
        if message.type == dhcp.DISCOVER:
            kind = dhcp.OFFER
        elif message.type == dhcp.REQUEST:
            kind = dhcp.NAK if self.refuse else dhcp.ACK
        else:
            return None
        options = [
            (dhcp.MESSAGE_TYPE, bytes((kind,))),
            (dhcp.SERVER_ID, self.address),
            (dhcp.LEASE_TIME, self.lease.to_bytes(4, "big")),
            *self.options,
        ]
        yiaddr = self.offer if kind != dhcp.NAK else bytes(4)
        return dhcp.build(
            dhcp.BOOTREPLY, message.xid, message.chaddr, options, yiaddr=yiaddr, siaddr=self.address
        )
