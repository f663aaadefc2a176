"""The Debian mirror to bootstrap from, read from this machine's own apt sources.

No host name is written into the code: whichever mirror apt on this machine uses (a local mirror,
a proxy, a snapshot) is the one debootstrap uses. apt reads /etc/apt/sources.list, then
/etc/apt/sources.list.d/*.list (one-line format) and *.sources (deb822 format) in name order; files
with any other name (such as `x.list.disabled`) are ignored, as apt ignores them.
"""

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from hostkit.errors import ArtifactError

ETC_APT = Path("/etc/apt")

# URI schemes debootstrap can fetch from; apt-only transports (mirror+, cdrom:, tor+) are skipped.
_DEBOOTSTRAP_SCHEMES = ("http", "https", "file")


@dataclass(frozen=True)
class AptSource:
    """One entry of apt's sources: a deb822 stanza or a one-line `deb` line."""

    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    enabled: bool = True


def parse_one_line(text: str) -> list[AptSource]:
    """Parse the one-line format: `deb [option=value ...] URI suite component...`."""
    sources = []
    for raw_line in text.splitlines():
        line = raw_line.split("#", 1)[0].strip()
        if not line:
            continue
        kind, _, rest = line.replace("\t", " ").partition(" ")
        rest = rest.strip()
        if rest.startswith("["):
            # Options may contain spaces ("[ arch=amd64 ]"): skip to the closing bracket.
            rest = rest.partition("]")[2]
        fields = rest.split()
        if len(fields) < 2:
            continue
        uri, suite, *components = fields
        sources.append(AptSource((kind,), (uri,), (suite,), tuple(components)))
    return sources


def parse_deb822(text: str) -> list[AptSource]:
    """Parse the deb822 format: `Field: value` stanzas separated by blank lines."""
    sources = []
    for fields in _deb822_stanzas(text):
        sources.append(
            AptSource(
                types=tuple(fields.get("types", "").split()),
                uris=tuple(fields.get("uris", "").split()),
                suites=tuple(fields.get("suites", "").split()),
                components=tuple(fields.get("components", "").split()),
                enabled=fields.get("enabled", "yes").strip().lower() != "no",
            )
        )
    return sources


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    """Split deb822 text into stanzas of lower-cased field names to (possibly multi-line) values."""
    stanzas: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if fields:
                stanzas.append(fields)
            fields, name = {}, ""
        elif line[0] in " \t":
            if name:  # a continuation line (e.g. an embedded Signed-By key) extends the value
                fields[name] += "\n" + line.strip()
        else:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            fields[name] = value.strip()
    if fields:
        stanzas.append(fields)
    return stanzas


def source_files(etc_apt: Path = ETC_APT) -> list[Path]:
    """The files apt reads its sources from, in apt's order."""
    files = [etc_apt / "sources.list"]
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    return [f for f in files if f.is_file()]


def read_sources(etc_apt: Path = ETC_APT) -> list[AptSource]:
    """Every source entry configured under `etc_apt`, in apt's order."""
    sources = []
    for path in source_files(etc_apt):
        text = path.read_text(encoding="utf-8")
        sources += parse_deb822(text) if path.suffix == ".sources" else parse_one_line(text)
    return sources


def pick_mirror(sources: list[AptSource], suite: str) -> str | None:
    """The first enabled `deb` URI serving `suite` with component main that debootstrap can use."""
    for source in sources:
        if not source.enabled or "deb" not in source.types:
            continue
        if suite not in source.suites or "main" not in source.components:
            continue
        for uri in source.uris:
            if urlsplit(uri).scheme in _DEBOOTSTRAP_SCHEMES:
                return uri
    return None


def debian_mirror(suite: str, etc_apt: Path = ETC_APT) -> str:
    """The mirror this machine's apt uses for `suite`; raise ArtifactError saying what to add."""
    mirror = pick_mirror(read_sources(etc_apt), suite)
    if mirror is None:
        read = ", ".join(str(p) for p in source_files(etc_apt)) or "no source files"
        raise ArtifactError(
            f"no enabled 'deb' source serves suite {suite!r} with component 'main' in this "
            f"machine's apt sources ({read}). Configure one, for example in "
            f"{etc_apt}/sources.list.d/debian.sources:\n"
            f"Types: deb\nURIs: http://<your Debian mirror>/debian\nSuites: {suite}\n"
            "Components: main"
        )
    return mirror
