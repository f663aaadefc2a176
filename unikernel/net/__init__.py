"""The network stack: sans-IO protocol engines, joined by stack.py, driven by interface.py.

Engines are fed bytes and the time and return what to send; none of them does I/O or reads a
clock. IPv4 addresses are 4-byte `bytes` and MAC addresses 6-byte `bytes` throughout (the
`ipaddress` module is too heavy to import at boot).
"""
