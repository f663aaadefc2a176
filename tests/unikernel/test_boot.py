"""The boot layer's module loading, outside a VM: the system call is replaced, never made (it
would load a module into the host's kernel)."""

from __future__ import annotations

import errno
import importlib
import os
import sys
import types
from collections.abc import Iterator

import pytest

from unikernel.core import kernel_calls
from unikernel.core.console import Console


@pytest.fixture
def boot(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """unikernel.boot, imported against a generated configuration of our own."""
    config = types.ModuleType("_unikernel_config")
    config.TARGET, config.NICS, config.MODULES = "qemu", ("eth0",), ()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "_unikernel_config", config)
    monkeypatch.delitem(sys.modules, "unikernel.boot", raising=False)
    yield importlib.import_module("unikernel.boot")
    sys.modules.pop("unikernel.boot", None)


def test_modules_load_in_order_and_failures_are_said_but_not_fatal(
    boot: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes = {"/m/built_in.ko": errno.EEXIST, "/m/broken.ko": errno.ENOEXEC}
    tried: list[str] = []

    def load_module(path: str, parameters: str = "") -> None:
        tried.append(path)
        if path in outcomes:
            raise OSError(outcomes[path], os.strerror(outcomes[path]))

    monkeypatch.setattr(kernel_calls, "load_module", load_module)
    paths = ("/m/virtio.ko", "/m/built_in.ko", "/m/broken.ko", "/m/virtio_net.ko")
    read_end, write_end = os.pipe()
    try:
        boot.load_kernel_modules(paths, Console(write_end))
        os.close(write_end)
        said = os.read(read_end, 65536).decode()
    finally:
        os.close(read_end)
    assert tried == list(paths)  # every one, in order, past a failure
    assert said.splitlines() == [
        "boot: kernel module broken.ko did not load: errno 8 ENOEXEC (Exec format error)"
    ]


def test_a_missing_module_file_is_an_oserror_before_any_system_call(
    tmp_path: os.PathLike[str],
) -> None:
    with pytest.raises(FileNotFoundError):
        kernel_calls.load_module(os.path.join(tmp_path, "absent.ko"))
