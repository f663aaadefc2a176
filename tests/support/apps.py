"""Small unikernel applications the tests write into a folder of their own."""

from __future__ import annotations

import textwrap
from pathlib import Path


def make_app(folder: Path, main_source: str, **extra: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.py").write_text(
        "from unikernel.devices import Console\n"
        "from unikernel.toolchain.app import App\n"
        "app = App(name='probe', main='probe_main:main', devices=(Console(),))\n"
    )
    (folder / "probe_main.py").write_text(textwrap.dedent(main_source))
    for name, source in extra.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return folder
