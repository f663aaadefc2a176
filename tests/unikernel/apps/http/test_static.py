"""The static site (apps/http/static.py) over a tar store: paths, folders' index pages, types,
ETags and conditional GETs, methods."""

from __future__ import annotations

import io
import tarfile

import pytest

from unikernel.apps.http.messages import Headers, Request, Response
from unikernel.apps.http.static import StaticSite, content_type, decode_path
from unikernel.block.tar_store import TarStore
from unikernel.core.scheduler import run

FILES = {
    "index.html": b"<h1>home</h1>",
    "blog/index.html": b"<h1>blog</h1>",
    "blog/a b.html": b"spaced",
    "style.css": b"body{}",
    "data/blob": bytes(range(256)) * 40,
}


def archive(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture
def site() -> StaticSite:
    return StaticSite(TarStore.from_bytes(archive(FILES)))


def get(site: StaticSite, path: str, method: str = "GET", **headers: str) -> Response:
    fields = [(name.replace("_", "-"), value) for name, value in headers.items()]
    request = Request(method, path, Headers([("Host", "x"), *fields]))
    return run(site.handle, request)


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("/", ""),
        ("/index.html", "index.html"),
        ("//blog///", "blog"),
        ("/./blog/./x", "blog/x"),
        ("/blog/a%20b.html", "blog/a b.html"),
        ("/%C3%A9t%C3%A9", "été"),
        ("/../etc/passwd", None),
        ("/blog/%2e%2e/%2e%2e/x", None),
        ("/a%00b", None),
        ("/a%5cb", None),
        ("/bad%zz", None),
        ("/cut%4", None),
        ("/%ff", None),  # not UTF-8
    ],
)
def test_paths_decode_to_keys_or_are_refused(path: str, key: str | None) -> None:
    assert decode_path(path) == key


def test_files_folders_and_types(site: StaticSite) -> None:
    home = get(site, "/")
    assert (home.status, bytes(home.body)) == (200, b"<h1>home</h1>")
    assert ("Content-Type", "text/html; charset=utf-8") in home.headers
    assert bytes(get(site, "/blog/").body) == b"<h1>blog</h1>"
    assert bytes(get(site, "/blog").body) == b"<h1>blog</h1>"
    assert bytes(get(site, "/blog/a%20b.html").body) == b"spaced"
    blob = get(site, "/data/blob")
    assert bytes(blob.body) == FILES["data/blob"]
    assert ("Content-Type", "application/octet-stream") in blob.headers
    assert content_type("x/STYLE.CSS") == "text/css; charset=utf-8"
    assert content_type("README") == "application/octet-stream"


def test_missing_and_escaping_paths_are_404(site: StaticSite) -> None:
    assert get(site, "/nothing.html").status == 404
    assert get(site, "/../index.html").status == 404
    assert get(site, "/data").status == 404  # a folder without an index page


def test_only_get_and_head(site: StaticSite) -> None:
    response = get(site, "/", "POST")
    assert response.status == 405
    assert ("Allow", "GET, HEAD") in response.headers
    assert get(site, "/", "HEAD").status == 200


def test_etags_are_strong_stable_and_make_conditional_gets_304(site: StaticSite) -> None:
    first = dict(get(site, "/style.css").headers)["ETag"]
    assert first.startswith('"') and first.endswith('"')
    assert dict(get(site, "/style.css").headers)["ETag"] == first
    assert dict(get(site, "/").headers)["ETag"] != first
    not_modified = get(site, "/style.css", If_None_Match=first)
    assert (not_modified.status, bytes(not_modified.body)) == (304, b"")
    assert ("ETag", first) in not_modified.headers
    assert get(site, "/style.css", If_None_Match=f'"other", W/{first}').status == 304
    assert get(site, "/style.css", If_None_Match="*").status == 304
    assert get(site, "/style.css", If_None_Match='"other"').status == 200
