"""The web suite's Linux side: the benchmark site, and nginx and apache2 started on it."""

from __future__ import annotations

import glob
import http.client
import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from harness.targets.base import free_port
from tests.support.programs import require_programs
from workloads import linux_script
from workloads.web.web_server import (
    APACHE_MODULES,
    CONTENT_TYPES,
    INDEX_SIZE,
    LARGE_NAME,
    LARGE_SIZE,
    PROGRAMS,
    READY_LINE,
    SERVERS,
    SITE_PAGES,
    apache2_config,
    extra_files,
    nginx_config,
    site_files,
    site_tar,
)

SCRIPT = linux_script("web", "web_server.py")
FOLDERS = f"{tempfile.gettempdir()}/unibench-web-"
KIB = 1024


def content_type(name: str) -> str:
    return CONTENT_TYPES[name.rpartition(".")[2]]


# The site, as the harness builds it into images.


def test_the_index_page_is_as_long_as_nginx_s_welcome_page() -> None:
    assert len(site_files()["index.html"]) == INDEX_SIZE == 612


def test_the_site_is_the_same_every_time() -> None:
    assert site_files() == site_files()
    assert site_tar() == site_tar()


def test_the_site_has_its_files_at_their_sizes() -> None:
    files = site_files()
    posts = [f"blog/post-{n}.html" for n in range(1, 11)]
    expected = {"index.html", "about.html", "style.css", "logo.svg", "data/64k.bin", *posts}
    assert set(files) == expected
    assert 1.5 * KIB <= len(files["about.html"]) <= 2.5 * KIB
    assert all(4 * KIB <= len(files[post]) <= 8 * KIB for post in posts)
    assert len({files[post] for post in posts}) == len(posts)
    assert 0.75 * KIB <= len(files["style.css"]) <= 1.25 * KIB
    assert 2.5 * KIB <= len(files["logo.svg"]) <= 3.5 * KIB
    data = files["data/64k.bin"]
    assert len(data) == 64 * KIB and len(set(data)) == 256  # pseudo-random, not a pattern
    assert all(content_type(name) for name in files)


def test_the_large_file_is_only_there_when_asked_for() -> None:
    large = site_files(large=True)
    assert LARGE_NAME not in site_files()
    assert len(large[LARGE_NAME]) == LARGE_SIZE == 10 << 20
    assert {name: data for name, data in large.items() if name != LARGE_NAME} == site_files()


def test_a_session_fetches_pages_of_the_site() -> None:
    files = site_files()
    assert SITE_PAGES[0] == "/"
    assert all(page.startswith("/") and page[1:] in files for page in SITE_PAGES[1:])


@pytest.mark.parametrize("large", [False, True])
def test_the_site_s_archive_holds_the_same_files(large: bool) -> None:
    files = site_files(large)
    with tarfile.open(fileobj=io.BytesIO(site_tar(large)), mode="r:") as tar:
        members = tar.getmembers()
        assert [member.name for member in members] == sorted(files)
        for member in members:
            assert member.isfile() and member.mode == 0o644
            assert member.mtime == 0 and member.uid == 0 and member.gid == 0
            extracted = tar.extractfile(member)
            assert extracted is not None and extracted.read() == files[member.name]


def test_neither_configuration_reads_anything_from_etc() -> None:
    # Containers have only the program, its libraries and apache2's modules.
    for config in (nginx_config, apache2_config):
        text = config("/tmp/unibench-web-1-x", "127.0.0.1", 8080, 2)
        directives = [line.split("#")[0] for line in text.splitlines()]  # not the comments
        assert not [line for line in directives if "/etc/" in line]
    modules = apache2_config("/tmp/x", "127.0.0.1", 8080, 2)
    assert all(f"/{file}\n" in modules for file in APACHE_MODULES.values())


@pytest.mark.parametrize("server", SERVERS)
def test_the_files_a_container_needs_besides_the_program_are_here(server: str) -> None:
    require_programs(PROGRAMS[server])
    files = extra_files(server)
    assert all(os.path.isfile(file) for file in files)
    if server == "apache2":
        assert {os.path.basename(file) for file in files} >= {"mod_mpm_event.so", "libgcc_s.so.1"}


# The servers, started by the script and fetched from by real clients.


@dataclass
class Running:
    child: subprocess.Popen[str]
    port: int
    ready: str

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def start(server: str, *extra: str) -> Running:
    require_programs(PROGRAMS[server])
    port = free_port("tcp")
    argv = [sys.executable, "-I", "-S", str(SCRIPT), "--server", server]
    argv += ["--listen", f"127.0.0.1:{port}", "--workers", "2", *extra]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    return Running(child, port, child.stdout.readline())


def stop(running: Running) -> int:
    running.child.send_signal(signal.SIGTERM)
    return running.child.wait(timeout=30)


@pytest.fixture(scope="module", params=SERVERS)
def running(request: pytest.FixtureRequest) -> Iterator[Running]:
    started = start(request.param, "--large")
    try:
        assert started.ready.startswith(f"{READY_LINE} 16 files"), started.ready
        yield started
    finally:
        stop(started)


def raw_exchange(port: int, request: bytes) -> bytes:
    """What the server sends back to `request` until it closes the connection."""
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    require_programs("curl")
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=60, check=True)


def test_http_client_gets_every_file_over_one_connection(running: Running) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200 and response.read() == site_files()["index.html"]
        sock = conn.sock  # every other file comes over this connection
        for name, data in site_files(large=True).items():
            conn.request("GET", f"/{name}")
            response = conn.getresponse()
            assert response.status == 200, name
            assert response.read() == data, name
            assert response.getheader("Content-Type") == content_type(name)
            assert response.getheader("ETag")
            assert conn.sock is sock and not response.will_close
    finally:
        conn.close()


def test_curl_gets_every_file_byte_exact(running: Running, tmp_path: Path) -> None:
    for name, data in site_files(large=True).items():
        saved = tmp_path / "saved"
        done = curl("-o", str(saved), "-w", "%{http_code} %{content_type}", running.url(f"/{name}"))
        assert done.stdout.decode() == f"200 {content_type(name)}", name
        assert saved.read_bytes() == data, name


def test_a_conditional_get_of_an_unchanged_file_is_answered_304(running: Running) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
    try:
        for path in ("/index.html", "/style.css", "/data/64k.bin"):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            etag = response.getheader("ETag")
            assert response.status == 200 and etag
            conn.request("GET", path, headers={"If-None-Match": etag})
            response = conn.getresponse()
            assert response.status == 304 and response.read() == b""
            conn.request("GET", path, headers={"If-None-Match": '"not-this-one"'})
            response = conn.getresponse()
            assert response.status == 200 and response.read() == site_files()[path[1:]]
    finally:
        conn.close()


def test_head_sends_the_headers_only(running: Running) -> None:
    reply = raw_exchange(running.port, b"HEAD /style.css HTTP/1.0\r\nHost: localhost\r\n\r\n")
    head, separator, body = reply.partition(b"\r\n\r\n")
    assert separator and body == b""
    lines = head.decode().split("\r\n")
    assert lines[0].split()[1] == "200"
    headers = {line.split(":")[0].lower(): line.split(":", 1)[1].strip() for line in lines[1:]}
    assert headers["content-length"] == str(len(site_files()["style.css"]))
    assert headers["content-type"] == "text/css" and headers["etag"]


def test_curl_reuses_its_connection_for_a_second_url(running: Running) -> None:
    done = curl(
        "-v", "-o", os.devnull, "-o", os.devnull, running.url("/"), running.url("/about.html")
    )
    assert b"Re-using existing connection" in done.stderr


def test_a_missing_file_is_not_found(running: Running) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
    try:
        conn.request("GET", "/blog/post-11.html")
        response = conn.getresponse()
        response.read()
        assert response.status == 404
    finally:
        conn.close()


def folders_of(pid: int) -> list[str]:
    return glob.glob(f"{FOLDERS}{pid}-*")


@pytest.mark.parametrize("server", SERVERS)
def test_sigterm_stops_the_server_and_removes_its_folder(server: str) -> None:
    started = start(server)
    try:
        assert started.ready.startswith(f"{READY_LINE} 15 files")
        assert f"on 127.0.0.1:{started.port}" in started.ready
        processes = psutil.Process(started.child.pid).children(recursive=True)
        assert len(processes) >= 3  # a master and its two workers
        assert all(process.name() == PROGRAMS[server] for process in processes)
        assert len(folders_of(started.child.pid)) == 1
    finally:
        code = stop(started)
    assert code == 0
    _, alive = psutil.wait_procs(processes, timeout=5)
    assert not alive
    assert folders_of(started.child.pid) == []


@pytest.mark.parametrize("server", SERVERS)
def test_a_server_that_cannot_start_says_why(server: str) -> None:
    require_programs(PROGRAMS[server])
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        argv = [sys.executable, "-I", "-S", str(SCRIPT), "--server", server]
        child = subprocess.Popen(
            [*argv, "--listen", f"127.0.0.1:{port}", "--workers", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        out, err = child.communicate(timeout=60)
    assert child.returncode != 0
    assert READY_LINE not in out
    assert "Address already in use" in err
    assert f"{PROGRAMS[server]} exited" in err
    assert folders_of(child.pid) == []


def test_a_missing_argument_says_how_to_call_it() -> None:
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(SCRIPT), "--listen", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "--server" in done.stderr


def test_the_folder_of_a_killed_script_is_removed_by_the_next_one() -> None:
    require_programs("nginx")
    argv = [sys.executable, "-I", "-S", str(SCRIPT), "--server", "nginx", "--workers", "1"]
    killed = subprocess.Popen(
        [*argv, "--listen", f"127.0.0.1:{free_port('tcp')}"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert killed.stdout is not None and killed.stdout.readline().startswith(READY_LINE)
    left = folders_of(killed.pid)
    os.killpg(killed.pid, signal.SIGKILL)  # as the process target stops its workloads
    killed.wait()
    assert len(left) == 1 and os.path.isdir(left[0])  # SIGKILL left no time to clean up
    next_one = subprocess.Popen(
        [*argv, "--listen", f"127.0.0.1:{free_port('tcp')}"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert next_one.stdout is not None and next_one.stdout.readline().startswith(READY_LINE)
        assert not os.path.exists(left[0])
    finally:
        next_one.send_signal(signal.SIGTERM)
        next_one.wait(timeout=30)
