"""An interface's IPv4 configuration, given statically or leased by DHCP."""

from __future__ import annotations

from unikernel.net.ipv4 import format_address, netmask, parse_address, same_network


class Ipv4Config:
    __slots__ = ("address", "broadcast", "dns", "gateway", "prefix_len")

    def __init__(
        self,
        address: bytes,
        prefix_len: int,
        gateway: bytes | None = None,
        dns: tuple[bytes, ...] = (),
    ) -> None:
        if len(address) != 4 or (gateway is not None and len(gateway) != 4):
            raise ValueError("IPv4 addresses are 4 bytes")
        mask = netmask(prefix_len)  # validates prefix_len
        self.address = address
        self.prefix_len = prefix_len
        self.gateway = gateway
        self.dns = dns
        self.broadcast = bytes(a | (~m & 0xFF) for a, m in zip(address, mask, strict=True))

    @property
    def netmask(self) -> bytes:
        return netmask(self.prefix_len)

    def on_link(self, address: bytes) -> bool:
        """Whether `address` is reached directly rather than through the gateway."""
        return same_network(address, self.address, self.prefix_len)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ipv4Config) and (
            self.address,
            self.prefix_len,
            self.gateway,
            self.dns,
        ) == (other.address, other.prefix_len, other.gateway, other.dns)

    def __hash__(self) -> int:
        return hash((self.address, self.prefix_len, self.gateway, self.dns))

    def __repr__(self) -> str:
        gateway = "" if self.gateway is None else f" via {format_address(self.gateway)}"
        return f"<Ipv4Config {format_address(self.address)}/{self.prefix_len}{gateway}>"


def static(cidr: str, gateway: str | None = None, dns: tuple[str, ...] = ()) -> Ipv4Config:
    """A configuration from text: static("10.0.0.2/24", gateway="10.0.0.1")."""
    address, slash, prefix = cidr.partition("/")
    if not slash or not prefix.isdigit():
        raise ValueError(f"not an address/prefix: {cidr!r}")
    return Ipv4Config(
        parse_address(address),
        int(prefix),
        None if gateway is None else parse_address(gateway),
        tuple(parse_address(server) for server in dns),
    )
