from pathlib import Path

import pytest

from hostkit.apt_sources import (
    AptSource,
    debian_mirror,
    parse_deb822,
    parse_one_line,
    pick_mirror,
    read_sources,
    source_files,
)
from hostkit.errors import ArtifactError

DEBIAN_SOURCES = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

SOURCES_LIST = """\
# deb cdrom:[Debian GNU/Linux 12]/ bookworm main
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://one.example/debian bookworm main contrib
deb [ arch=amd64 ]\thttp://two.example/debian trixie main  # trailing comment
"""


def test_deb822_stanzas_skip_comments_and_split_lists() -> None:
    main, security = parse_deb822(DEBIAN_SOURCES)
    assert main == AptSource(
        types=("deb",),
        uris=("http://mirror.example/debian",),
        suites=("bookworm", "bookworm-updates"),
        components=("main",),
    )
    assert security.suites == ("bookworm-security",)
    assert security.uris == ("http://mirror.example/debian-security",)


def test_deb822_multi_line_values_and_disabled_stanzas() -> None:
    text = (
        "Types: deb deb-src\nURIs: http://a.example/debian\n  http://b.example/debian\n"
        "Suites: bookworm\nComponents: main\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n"
        " .\n -----END PGP PUBLIC KEY BLOCK-----\n\n"
        "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: trixie\n"
        "Components: main\n"
    )
    first, disabled = parse_deb822(text)
    assert first.types == ("deb", "deb-src")
    assert first.uris == ("http://a.example/debian", "http://b.example/debian")
    assert first.enabled and not disabled.enabled
    assert pick_mirror([first, disabled], "trixie") is None


def test_one_line_format_with_options_and_comments() -> None:
    sources = parse_one_line(SOURCES_LIST)
    assert [s.types for s in sources] == [("deb-src",), ("deb",), ("deb",)]
    assert sources[1].uris == ("http://one.example/debian",)
    assert sources[1].components == ("main", "contrib")
    assert sources[2] == AptSource(("deb",), ("http://two.example/debian",), ("trixie",), ("main",))


def test_pick_mirror_takes_the_first_deb_source_serving_the_exact_suite() -> None:
    sources = parse_one_line(SOURCES_LIST) + parse_deb822(DEBIAN_SOURCES)
    assert pick_mirror(sources, "bookworm") == "http://one.example/debian"  # not the deb-src
    assert pick_mirror(sources, "trixie") == "http://two.example/debian"
    assert pick_mirror(sources, "bookworm-security") == "http://mirror.example/debian-security"
    assert pick_mirror(sources, "bullseye") is None


def test_pick_mirror_skips_sources_debootstrap_cannot_use() -> None:
    sources = parse_one_line(
        "deb mirror+file:/etc/apt/mirrors.txt bookworm main\n"
        "deb http://nomain.example/debian bookworm contrib non-free\n"
        "deb https://ok.example/debian bookworm main\n"
    )
    assert pick_mirror(sources, "bookworm") == "https://ok.example/debian"


def _etc_apt(tmp_path: Path) -> Path:
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    (parts / "debian.sources").write_text(DEBIAN_SOURCES)
    (parts / "cloud.list.disabled-by-farm").write_text(
        "deb https://off.example/apt bookworm main\n"
    )
    (parts / "node.sources.disabled-by-farm").write_text(
        "Types: deb\nURIs: https://off.example/node\nSuites: bookworm\nComponents: main\n"
    )
    return tmp_path


def test_disabled_files_are_ignored(tmp_path: Path) -> None:
    etc_apt = _etc_apt(tmp_path)
    assert source_files(etc_apt) == [etc_apt / "sources.list.d" / "debian.sources"]
    assert debian_mirror("bookworm", etc_apt) == "http://mirror.example/debian"


def test_sources_list_is_read_before_sources_list_d(tmp_path: Path) -> None:
    etc_apt = _etc_apt(tmp_path)
    (etc_apt / "sources.list").write_text("deb http://first.example/debian bookworm main\n")
    assert [s.uris[0] for s in read_sources(etc_apt)] == [
        "http://first.example/debian",
        "http://mirror.example/debian",
        "http://mirror.example/debian-security",
    ]
    assert debian_mirror("bookworm", etc_apt) == "http://first.example/debian"


def test_no_mirror_says_what_to_configure(tmp_path: Path) -> None:
    etc_apt = _etc_apt(tmp_path)
    with pytest.raises(ArtifactError) as raised:
        debian_mirror("trixie", etc_apt)
    message = str(raised.value)
    assert "'trixie'" in message
    assert "debian.sources" in message
    assert "Suites: trixie" in message
    assert "Types: deb" in message
