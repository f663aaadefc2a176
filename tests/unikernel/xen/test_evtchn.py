"""/dev/xen/evtchn: ioctl numbers and layouts, and the driver over a stand-in device.

There is no Xen here: a FIFO stands in for the device's read and write side (port numbers in,
port numbers out), and a fake fcntl.ioctl for its ioctls.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from unikernel.drivers.xen import evtchn
from unikernel.drivers.xen.device_files import io_none
from unikernel.drivers.xen.evtchn import EventChannels, decode_ports, encode_ports


def linux_ioc_none(kind: str, nr: int, size: int) -> int:
    """_IOC(_IOC_NONE, type, nr, size) with asm-generic/ioctl.h's shifts and widths."""
    nrbits, typebits, sizebits = 8, 8, 14
    typeshift = nrbits
    sizeshift = typeshift + typebits
    dirshift = sizeshift + sizebits
    return 0 << dirshift | ord(kind) << typeshift | nr | size << sizeshift


class BindInterdomain(ctypes.Structure):
    _fields_ = [("remote_domain", ctypes.c_uint32), ("remote_port", ctypes.c_uint32)]


class OneU32(ctypes.Structure):
    _fields_ = [("value", ctypes.c_uint32)]


def test_ioctl_numbers_are_the_reference_table() -> None:
    assert evtchn.IOCTL_EVTCHN_BIND_VIRQ == 0x00044500
    assert evtchn.IOCTL_EVTCHN_BIND_INTERDOMAIN == 0x00084501
    assert evtchn.IOCTL_EVTCHN_BIND_UNBOUND_PORT == 0x00044502
    assert evtchn.IOCTL_EVTCHN_UNBIND == 0x00044503
    assert evtchn.IOCTL_EVTCHN_NOTIFY == 0x00044504
    assert evtchn.IOCTL_EVTCHN_RESET == 0x00004505


def test_ioctl_numbers_encode_the_struct_sizes() -> None:
    interdomain = linux_ioc_none("E", 1, ctypes.sizeof(BindInterdomain))
    assert interdomain == evtchn.IOCTL_EVTCHN_BIND_INTERDOMAIN
    for nr, number in enumerate(
        [
            evtchn.IOCTL_EVTCHN_BIND_VIRQ,
            None,
            evtchn.IOCTL_EVTCHN_BIND_UNBOUND_PORT,
            evtchn.IOCTL_EVTCHN_UNBIND,
            evtchn.IOCTL_EVTCHN_NOTIFY,
        ]
    ):
        if number is not None:
            assert number == linux_ioc_none("E", nr, ctypes.sizeof(OneU32))


@pytest.mark.parametrize(("kind", "nr", "size"), [("E", 0, 0), ("G", 255, 16383), ("x", 7, 24)])
def test_io_none_is_the_kernel_macro(kind: str, nr: int, size: int) -> None:
    assert (
        io_none(kind, nr, size)
        == linux_ioc_none(kind, nr, size)
        == size << 16 | ord(kind) << 8 | nr
    )


@pytest.mark.parametrize(("kind", "nr", "size"), [("EE", 0, 4), ("E", 256, 4), ("E", 0, 1 << 14)])
def test_io_none_refuses_what_does_not_fit(kind: str, nr: int, size: int) -> None:
    with pytest.raises(ValueError):
        io_none(kind, nr, size)


def test_argument_layouts() -> None:
    interdomain = BindInterdomain.from_buffer(evtchn.pack_bind_interdomain(3, 0x12345))
    assert (interdomain.remote_domain, interdomain.remote_port) == (3, 0x12345)
    assert len(evtchn.pack_bind_interdomain(3, 4)) == ctypes.sizeof(BindInterdomain)
    for packed in (evtchn.pack_bind_unbound(9), evtchn.pack_port(9), evtchn.pack_bind_virq(9)):
        assert len(packed) == 4 and OneU32.from_buffer(packed).value == 9
        assert isinstance(packed, bytearray)  # mutable: fcntl.ioctl then returns the C result


def test_ports_encode_and_decode_as_native_u32s() -> None:
    ports = [1, 7, 0xFFFFFFFF, 4095]
    data = encode_ports(ports)
    assert data == bytes((ctypes.c_uint32 * 4)(*ports))
    assert decode_ports(data) == ports
    with pytest.raises(ValueError, match="4 bytes each"):
        decode_ports(data[:-1])


class FakeDevice:
    """The ioctl side of /dev/xen/evtchn."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, bytes]] = []
        self.next_port = 10

    def ioctl(self, fd: int, request: int, arg: Any = 0, mutate: bool = True) -> Any:
        self.calls.append((request, bytes(arg) if not isinstance(arg, int) else b""))
        if request in (evtchn.IOCTL_EVTCHN_BIND_UNBOUND_PORT, evtchn.IOCTL_EVTCHN_BIND_INTERDOMAIN):
            # The real call returns the port only for a mutable argument.
            assert isinstance(arg, bytearray)
            self.next_port += 1
            return self.next_port
        return 0


@pytest.fixture
def channels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    fifo = tmp_path / "evtchn"
    os.mkfifo(fifo)
    device = FakeDevice()
    monkeypatch.setattr(evtchn, "fcntl", SimpleNamespace(ioctl=device.ioctl))
    opened = EventChannels(str(fifo))
    yield opened, device
    opened.close()


def test_bind_notify_unbind(channels: tuple[EventChannels, FakeDevice]) -> None:
    events, device = channels
    assert events.bind_unbound(0) == 11
    assert events.bind_interdomain(0, 33) == 12
    assert events.bound == [11, 12]
    events.notify(11)
    events.unbind(11)
    assert events.bound == [12]
    assert device.calls == [
        (evtchn.IOCTL_EVTCHN_BIND_UNBOUND_PORT, (0).to_bytes(4, "little")),
        (evtchn.IOCTL_EVTCHN_BIND_INTERDOMAIN, bytes(BindInterdomain(0, 33))),
        (evtchn.IOCTL_EVTCHN_NOTIFY, (11).to_bytes(4, "little")),
        (evtchn.IOCTL_EVTCHN_UNBIND, (11).to_bytes(4, "little")),
    ]


def test_pending_reads_ports_and_unmask_writes_them(
    channels: tuple[EventChannels, FakeDevice],
) -> None:
    events, _ = channels
    assert events.pending() == []  # nothing fired: no blocking
    # Through the FIFO what we write comes back as what fired, which checks both encodings.
    events.unmask(11)
    events.unmask_all([12, 13])
    events.unmask_all([])
    assert events.pending() == [11, 12, 13]
    assert events.pending() == []


def test_an_overflow_resets_and_reports_every_bound_port(
    channels: tuple[EventChannels, FakeDevice], monkeypatch: pytest.MonkeyPatch
) -> None:
    events, device = channels
    events.bind_unbound(0)
    events.bind_unbound(0)

    def overflowed(fd: int, size: int) -> bytes:
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(evtchn, "os", SimpleNamespace(read=overflowed, close=os.close))
    assert events.pending() == [11, 12]
    assert events.overflows == 1
    assert device.calls[-1][0] == evtchn.IOCTL_EVTCHN_RESET


def test_other_read_errors_are_raised(
    channels: tuple[EventChannels, FakeDevice], monkeypatch: pytest.MonkeyPatch
) -> None:
    events, _ = channels

    def failing(fd: int, size: int) -> bytes:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(evtchn, "os", SimpleNamespace(read=failing, close=os.close))
    with pytest.raises(OSError, match="I/O error"):
        events.pending()


def test_a_missing_device_says_why(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="CONFIG_XEN_DEV_EVTCHN"):
        EventChannels(str(tmp_path / "absent"))
