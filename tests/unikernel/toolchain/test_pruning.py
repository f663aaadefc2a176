"""The import walk and the hosted build, on small applications made by the tests."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.support.apps import make_app
from unikernel.devices import Data
from unikernel.toolchain.app import AppError, load_app
from unikernel.toolchain.image import build, data_compiler, data_source
from unikernel.toolchain.runtime import PYTHON, Runtime, ensure_runtime

pytestmark = pytest.mark.slow  # the runtime comes from the debootstrap rootfs (cached)


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    return ensure_runtime()


def archive_modules(zip_path: Path) -> set[str]:
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
    return {name.removesuffix(".pyc").removesuffix("/__init__").replace("/", ".") for name in names}


def test_only_imported_modules_are_kept_and_the_app_runs_hosted(
    tmp_path: Path, runtime: Runtime
) -> None:
    folder = make_app(
        tmp_path / "app",
        """
        import helper

        TYPE_CHECKING = False
        if TYPE_CHECKING:
            import json  # for annotations only: never imported at run time


        def main() -> int:
            print("helper says", helper.ANSWER)
            return 3
        """,
        helper="import heapq\nANSWER = 42\n",
        unused="import asyncio\n",
    )
    result = build(load_app(folder), "hosted", log=lambda _: None)
    kept = archive_modules(result.outputs["app"])
    assert {"probe_main", "helper", "heapq", "unikernel.boot", "_unikernel_config"} <= kept
    assert "unused" not in kept and "asyncio" not in kept
    assert "json" not in kept  # behind TYPE_CHECKING
    assert "subprocess" not in kept  # os imports it only inside os.popen
    assert "doctest" not in kept  # heapq imports it only under __main__
    report = result.report
    assert report["dropped_stdlib_modules"] > 300  # type: ignore[operator]
    done = subprocess.run(
        [PYTHON, "-I", "-S", str(result.outputs["app"])], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 3, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("UNIBENCH-READY ") and "target=hosted" in lines[0]
    assert "helper says 42" in lines
    assert lines[-1] == "UNIBENCH-EXIT status=3"


def test_an_app_that_raises_exits_with_status_1_and_shows_the_traceback(tmp_path: Path) -> None:
    folder = make_app(tmp_path / "app", "def main() -> int:\n    raise ValueError('boom')\n")
    result = build(load_app(folder), "hosted", log=lambda _: None)
    done = subprocess.run(
        [PYTHON, "-I", "-S", str(result.outputs["app"])], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "ValueError: boom" in done.stdout
    assert done.stdout.splitlines()[-1] == "UNIBENCH-EXIT status=1"


def test_image_code_may_not_import_the_harness(tmp_path: Path) -> None:
    folder = make_app(tmp_path / "app", "import harness.cli\n\ndef main() -> int:\n    return 0\n")
    with pytest.raises(AppError, match=r"host-only modules: .*harness\.cli"):
        build(load_app(folder), "hosted", log=lambda _: None)


def test_bad_configs_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(AppError, match=r"has no config\.py"):
        load_app(tmp_path)
    (tmp_path / "config.py").write_text(
        "from unikernel.toolchain.app import App\napp = App(name='x', main='nomain')\n"
    )
    with pytest.raises(AppError, match="write it as 'module:function'"):
        load_app(tmp_path)


def test_data_files_are_compiled_into_the_image(tmp_path: Path) -> None:
    folder = tmp_path / "app"
    (folder / "pages").mkdir(parents=True)
    (folder / "pages" / "index.html").write_bytes(b"<h1>hello</h1>")
    (folder / "config.py").write_text(
        "from unikernel.devices import Console, Data\n"
        "from unikernel.toolchain.app import App\n"
        "app = App(name='site', main='site_main:main', devices=(Console(), Data('pages')))\n"
    )
    (folder / "site_main.py").write_text(
        "import _unikernel_data\n\n"
        "def main() -> int:\n"
        "    print(_unikernel_data.FILES['pages/index.html'].decode())\n"
        "    return 0\n"
    )
    result = build(load_app(folder), "hosted", log=lambda _: None)
    assert "_unikernel_data" in archive_modules(result.outputs["app"])
    done = subprocess.run(
        [PYTHON, "-I", "-S", str(result.outputs["app"])], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "<h1>hello</h1>" in done.stdout.splitlines()


def count_words(name: str, content: bytes) -> tuple[str, int]:
    """A data compiler for the tests: what the image holds instead of the file's bytes."""
    return (name, len(content.split()))


def decode_text(name: str, content: bytes) -> str:
    return content.decode()


def test_a_data_compiler_runs_at_build_time_and_the_image_holds_what_it_made(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "app"
    (folder / "texts").mkdir(parents=True)
    (folder / "texts" / "a.txt").write_bytes(b"three short words")
    compiler = f"{__name__}:count_words"
    (folder / "config.py").write_text(
        "from unikernel.devices import Console, Data\n"
        "from unikernel.toolchain.app import App\n"
        "app = App(name='words', main='words_main:main',\n"
        f"          devices=(Console(), Data('texts', compiler={compiler!r})))\n"
    )
    (folder / "words_main.py").write_text(
        "import _unikernel_data\n\n"
        "def main() -> int:\n"
        "    print(_unikernel_data.FILES['texts/a.txt'])\n"
        "    return 0\n"
    )
    result = build(load_app(folder), "hosted", log=lambda _: None)
    done = subprocess.run(
        [PYTHON, "-I", "-S", str(result.outputs["app"])], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "('texts/a.txt', 3)" in done.stdout.splitlines()


@pytest.mark.parametrize(
    ("compiler", "says"),
    [
        ("nowhere.at.all:compile", "no compiler nowhere.at.all:compile"),
        (f"{__name__}:PYTHON", "is not a function"),
        (f"{__name__}:count_words_of_nothing", "no compiler"),
    ],
)
def test_a_data_compiler_that_cannot_be_found_is_named(compiler: str, says: str) -> None:
    with pytest.raises(AppError, match=says):
        data_compiler(Data("texts", compiler=compiler))


def test_a_file_the_compiler_rejects_is_named_with_the_reason(tmp_path: Path) -> None:
    folder = tmp_path / "app"
    (folder / "texts").mkdir(parents=True)
    (folder / "texts" / "bad.txt").write_bytes(b"\xff\xfe")
    (folder / "config.py").write_text(
        "from unikernel.devices import Console, Data\n"
        "from unikernel.toolchain.app import App\n"
        "app = App(name='words', main='unikernel.boot:main',\n"
        f"          devices=(Console(), Data('texts', compiler='{__name__}:decode_text')))\n"
    )
    with pytest.raises(AppError, match=r"texts/bad.txt: .*can't decode"):
        data_source(load_app(folder))


def test_a_compiler_is_written_module_colon_function() -> None:
    with pytest.raises(ValueError, match="'module:function'"):
        Data("texts", compiler="just_a_module")
