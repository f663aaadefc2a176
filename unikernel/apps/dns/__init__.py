"""An authoritative DNS server, sans-IO: the wire format, zones, and answers as NSD 4 gives them."""
