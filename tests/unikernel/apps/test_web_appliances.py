"""The web appliances as the web suite runs them, against real clients: curl for every page of
the site (byte for byte, types, ETags, keep-alive) from the static appliance hosted on our
stack and booted under QEMU, and the microblog's API from both; raw requests that are
malformed get their 4xx and the appliance goes on serving; the microblog run as a Linux
process in socket mode keeps its data across a restart on the same disk."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.suites.web import socket_mode_workload, static_workload
from harness.targets import all_targets
from harness.targets.base import Instance, LaunchSettings, Workload, free_port
from hostkit.namespaces import entered
from tests.support.netns import require
from unikernel.toolchain.runtime import PYTHON
from workloads.web.web_server import READY_LINE, site_files

pytestmark = pytest.mark.slow  # builds the appliances, boots QEMU


def launch(target_name: str, workload: Workload) -> Instance:
    target = all_targets()[target_name]
    target.prepare(workload, log=lambda _: None)
    instance = target.create(workload, LaunchSettings(workload_params={"instances": "1"}))
    try:
        instance.start()
        instance.ready(deadline=time.perf_counter() + 180)
    except BaseException:
        instance.stop()
        raise
    return instance


@pytest.fixture(scope="module", params=["unikernel-hosted", "unikernel-qemu"])
def static_site(request: pytest.FixtureRequest) -> Iterator[Instance]:
    require("curl", "ip")
    instance = launch(request.param, static_workload())
    try:
        yield instance
    finally:
        instance.stop()


def curl(instance: Instance, *args: str) -> subprocess.CompletedProcess[bytes]:
    argv = ["curl", "--silent", "--show-error", "--max-time", "60", *args]
    if instance.namespace is not None:
        argv = ["ip", "netns", "exec", instance.namespace, *argv]
    return subprocess.run(argv, capture_output=True, check=False)


def base_url(instance: Instance) -> str:
    address = instance.address("http")
    assert address is not None
    return f"http://{address[0]}:{address[1]}"


def test_every_page_of_the_site_arrives_whole_on_one_connection(static_site: Instance) -> None:
    files = site_files()
    url = base_url(static_site)
    paths = sorted(files)
    done = curl(
        static_site, "-v", *(arg for path in paths for arg in (f"{url}/{path}", "-o", "/dev/null"))
    )
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stderr.count(b"Re-using existing connection") == len(paths) - 1
    for path in paths:
        got = curl(static_site, "--write-out", "\n%{content_type}", f"{url}/{path}")
        body, _, content_type = got.stdout.rpartition(b"\n")
        assert body == files[path], path
        expected = b"text/html" if path.endswith(".html") else b""
        assert content_type.startswith(expected), (path, content_type)
    index = curl(static_site, f"{url}/")
    assert index.stdout == files["index.html"] and len(index.stdout) == 612


def test_conditional_get_head_and_missing_pages(static_site: Instance) -> None:
    url = base_url(static_site)
    head = curl(static_site, "--head", f"{url}/style.css").stdout.decode()
    assert head.startswith("HTTP/1.1 200")
    etag = next(
        line.split(":", 1)[1].strip()
        for line in head.splitlines()
        if line.lower().startswith("etag:")
    )
    status = curl(
        static_site,
        "-o",
        "/dev/null",
        "--write-out",
        "%{http_code}",
        "-H",
        f"If-None-Match: {etag}",
        f"{url}/style.css",
    )
    assert status.stdout == b"304"
    missing = curl(static_site, "-o", "/dev/null", "--write-out", "%{http_code}", f"{url}/nope")
    assert missing.stdout == b"404"


def raw_exchange(instance: Instance, data: bytes) -> bytes:
    address = instance.address("http")
    assert address is not None
    with entered(instance.namespace):
        sock = socket.create_connection(address, timeout=30)
    with sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_malformed_requests_get_4xx_and_it_goes_on_serving(static_site: Instance) -> None:
    cases = {
        b"NOT HTTP AT ALL\r\n\r\n": b"400",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n": b"400",
        b"GET / HTTP/3.0\r\nHost: x\r\n\r\n": b"505",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n": b"400",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n": b"400",
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: " + b"y" * 20000 + b"\r\n\r\n": b"431",
    }
    for request, status in cases.items():
        reply = raw_exchange(static_site, request)
        assert reply.startswith(b"HTTP/1.1 " + status), (request[:40], reply[:60])
    pipelined = b"GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n" * 3
    reply = raw_exchange(
        static_site, pipelined + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert reply.count(b"HTTP/1.1 200 OK") == 4
    assert reply.endswith(site_files()["index.html"])


@pytest.mark.parametrize("target", ["unikernel-hosted", "unikernel-qemu"])
def test_the_microblog_api_with_curl(target: str) -> None:
    require("curl", "ip")
    instance = launch(target, socket_mode_workload("dynamic"))
    try:
        url = base_url(instance)

        def call(*args: str) -> tuple[int, bytes]:
            done = curl(instance, "--write-out", "\n%{http_code}", *args)
            body, _, status = done.stdout.rpartition(b"\n")
            return int(status), body

        for name in ("ada", "bob"):
            status, _ = call(
                "--json", json.dumps({"name": name, "password": "pw"}), f"{url}/api/users"
            )
            assert status == 201
        assert (
            call("--json", json.dumps({"name": "ada", "password": "pw"}), f"{url}/api/users")[0]
            == 409
        )
        status, body = call(
            "--json", json.dumps({"name": "ada", "password": "pw"}), f"{url}/api/sessions"
        )
        token = json.loads(body)["token"]
        auth = ("-H", f"Authorization: Bearer {token}")
        assert call(*auth, "--json", json.dumps({"name": "bob"}), f"{url}/api/follow")[0] == 204
        assert (
            call(*auth, "--json", json.dumps({"text": "<b>hello</b>"}), f"{url}/api/posts")[0]
            == 201
        )
        status, body = call(*auth, f"{url}/api/timeline")
        assert status == 200
        assert [post["text"] for post in json.loads(body)["posts"]] == ["<b>hello</b>"]
        status, page = call(*auth, f"{url}/timeline")
        assert status == 200 and b"&lt;b&gt;hello&lt;/b&gt;" in page and b"<b>hello" not in page
        assert call(f"{url}/api/timeline")[0] == 401
    finally:
        instance.stop()


def test_the_microblog_in_socket_mode_keeps_its_data_across_a_restart(tmp_path: Path) -> None:
    require("curl")
    archive = socket_mode_workload("dynamic").script
    disk = tmp_path / "store.img"
    disk.write_bytes(bytes(64 << 20))
    port = free_port("tcp")
    url = f"http://127.0.0.1:{port}"

    def start() -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [
                PYTHON,
                "-I",
                "-S",
                str(archive),
                "UNIKERNEL_NETWORK=sockets",
                f"UNIBENCH_LISTEN=127.0.0.1:{port}",
                f"UNIKERNEL_DISK_STORE={disk}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        for line in process.stdout:
            if READY_LINE in line:
                return process
            assert time.monotonic() < deadline, "not serving within a minute"
        raise AssertionError(f"exited with {process.wait()} before serving")

    def post_json(path: str, payload: object, *headers: str) -> bytes:
        done = subprocess.run(
            ["curl", "--silent", "--fail", "--json", json.dumps(payload), *headers, url + path],
            capture_output=True,
            check=True,
        )
        return done.stdout

    first = start()
    try:
        post_json("/api/users", {"name": "ada", "password": "pw"})
        token = json.loads(post_json("/api/sessions", {"name": "ada", "password": "pw"}))["token"]
        post_json(
            "/api/posts", {"text": "before the restart"}, "-H", f"Authorization: Bearer {token}"
        )
    finally:
        first.terminate()
        first.wait(10)
    second = start()
    try:
        done = subprocess.run(
            [
                "curl",
                "--silent",
                "--fail",
                "-H",
                f"Authorization: Bearer {token}",
                f"{url}/api/timeline",
            ],
            capture_output=True,
            check=True,
        )
        assert [p["text"] for p in json.loads(done.stdout)["posts"]] == ["before the restart"]
    finally:
        second.terminate()
        second.wait(10)
    assert os.path.getsize(disk) == 64 << 20


BIG_APP_CONFIG = """
from unikernel.devices import Console, Network, Port
from unikernel.toolchain.app import App

app = App(
    name="web-big",
    main="big_main:main",
    devices=(Console(), Network(ports=(Port("http", "tcp", number=80),))),
    memory_mib=256,
)
"""
BIG_APP_MAIN = """
from unikernel.apps.http.appliance import serve_http
from unikernel.apps.http.messages import Response

# 10 MiB in which every 4 bytes say where they are: a lost, doubled or reordered segment shows.
BIG = b"".join(index.to_bytes(4, "big") for index in range(10 << 18))


async def handle(request):
    return Response(200, [("Content-Type", "application/octet-stream")], memoryview(BIG))


async def main(devices):
    return await serve_http(devices, handle, "10 MiB")
"""


def test_a_ten_mebibyte_response_over_our_tcp(tmp_path: Path) -> None:
    """The driver's own tests run it on the host's TCP; this one on ours, hosted on TAP."""
    require("curl", "ip")
    folder = tmp_path / "web-big"
    folder.mkdir()
    (folder / "config.py").write_text(BIG_APP_CONFIG)
    (folder / "big_main.py").write_text(BIG_APP_MAIN)
    workload = Workload(
        name="web-big",
        script=Path(__file__),  # not run: the unikernel target runs the app
        devices=static_workload().devices,
        unikernel_app=folder,
    )
    instance = launch("unikernel-hosted", workload)
    try:
        done = curl(instance, f"{base_url(instance)}/big")
        assert done.returncode == 0, done.stderr
        expected = b"".join(index.to_bytes(4, "big") for index in range(10 << 18))
        assert len(done.stdout) == len(expected) and done.stdout == expected
    finally:
        instance.stop()
