"""The `docker` targets: the workload in a container, through the Docker SDK.

No registry is reachable, so base images are built from Debian packages (baselines/), and each
workload gets a thin image on top with its script. Ports are published on 127.0.0.1 only.
Launching is split as `docker run` splits it: create (timed as a phase, before t0), then start.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import os
import tarfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import docker.types
from docker.utils.socket import frames_iter

from baselines import docker_images
from harness.console import ConsoleWatcher
from harness.sizing import CHUNK, zlib_size
from harness.targets.base import (
    Availability,
    ImageSize,
    Instance,
    LaunchSettings,
    Log,
    Target,
    Usage,
    Workload,
    free_port,
)
from harness.targets.process import pinned_cpus
from hostkit.interrupts import signals_deferred
from hostkit.launch_disk import LaunchDisk
from hostkit.owners import token, token_alive

if TYPE_CHECKING:
    from unikernel.devices import Offload

LABEL = "org.unibench.owner-pid"  # the owner token of the harness that made it (hostkit.owners)
FIRST_GUEST_PORT = 7000
WORKDIR = "/opt/unibench"
DISKS_DIR = "/unibench/disks"
ENGINE_TIMEOUT = 120
CGROUP_ROOT = Path("/sys/fs/cgroup")
_containers = itertools.count()


def engine() -> docker.DockerClient:
    return docker.from_env(timeout=ENGINE_TIMEOUT)


def workload_image(client: docker.DockerClient, base_tag: str, workload: Workload, log: Log) -> str:
    """The base image plus the workload's script and host programs; built once per recipe."""
    dockerfile = f"FROM {base_tag}\nWORKDIR {WORKDIR}\nCOPY {workload.script.name} {WORKDIR}/\n"
    # Each file's contents under its name as the loader looks it up, in its folder's real
    # place: /lib is a link to /usr/lib in the images, which a copy must not replace.
    copies = {
        f"host{os.path.realpath(os.path.dirname(path))}/{os.path.basename(path)}": path
        for path in sorted(workload.host_files())
    }
    if copies:
        dockerfile += "COPY host/ /\n"
    recipe = hashlib.sha256(repr((dockerfile, sorted(copies))).encode()).hexdigest()[:8]
    base_id = base_tag.split(":", 1)[1]
    tag = f"unibench/workload-{workload.name}:{base_id}-{workload.digest()}-{recipe}"
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(tag)
        return tag
    log(f"building {tag}")
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile.encode())
        tar.addfile(info, io.BytesIO(dockerfile.encode()))
        tar.add(workload.script, arcname=workload.script.name)
        for arcname, path in copies.items():
            tar.add(os.path.realpath(path), arcname=arcname)
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True, pull=False)
    return tag


def remove_stale_containers(client: docker.DockerClient) -> list[str]:
    """Removes containers left by harness processes that died without cleaning up; says which."""
    removed = []
    # The low-level listing: the high-level one inspects each container, and fails on one
    # that another harness removes meanwhile.
    for container in client.api.containers(all=True, filters={"label": LABEL}):
        owner = container["Labels"].get(LABEL, "0")
        if not token_alive(owner):
            name = container["Names"][0].lstrip("/") if container["Names"] else container["Id"]
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_container(container["Id"], force=True)
                removed.append(f"container {name} of dead harness {owner}")
    return removed


def cgroup_v2_peak(pid: int, proc: Path = Path("/proc"), root: Path = CGROUP_ROOT) -> int | None:
    """The peak memory of the cgroup (v2) holding `pid`, from its memory.peak (Linux 5.19 on);
    None where there is none (cgroup v1, whose engines report max_usage instead)."""
    try:
        lines = (proc / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, _, path = line.partition("::")
        if hierarchy == "0" and path.startswith("/"):
            with contextlib.suppress(OSError, ValueError):
                return int((root / path.lstrip("/") / "memory.peak").read_text())
    return None


def attach_chunks(sock: Any) -> Iterator[bytes]:
    """The container's stdout and stderr, demultiplexed by the SDK, in arrival order."""
    try:
        for _stream, data in frames_iter(sock, tty=False):  # type: ignore[no-untyped-call]
            yield data
    finally:
        sock.close()


class ContainerInstance(Instance):
    # A probe sent before `docker start` returns reaches docker-proxy before the container's
    # interface exists: the host's ARP entry for the container goes unresolved and is retried
    # only after a second, so early probing would add a second to every time_to_service.
    probe_during_launch = False

    def __init__(
        self, client: docker.DockerClient, image: str, workload: Workload, settings: LaunchSettings
    ) -> None:
        self._client = client
        self.ready_marker = workload.ready_marker
        self._ports: dict[str, tuple[str, int]] = {}
        published: dict[str, tuple[str, int]] = {}
        places: dict[str, str] = {}
        for index, port in enumerate(workload.ports):
            guest = FIRST_GUEST_PORT + index
            host = free_port(port.protocol)
            self._ports[port.name] = ("127.0.0.1", host)
            published[f"{guest}/{port.protocol}"] = ("127.0.0.1", host)
            places[port.name] = f"0.0.0.0:{guest}"
        cpus = pinned_cpus(settings.cpus) if settings.cpus else None
        self._lock = threading.Lock()
        self._stopped = False
        self.phases: dict[str, float] = {}
        # A disk is its host file, bind-mounted where the workload is told to find it.
        self._disks = [LaunchDisk(disk) for disk in workload.disks]
        mounts = []
        for disk in self._disks:
            places[disk.name] = f"{DISKS_DIR}/{disk.name}"
            mounts.append(
                docker.types.Mount(
                    places[disk.name], str(disk.path), type="bind", read_only=disk.read_only
                )
            )
        began = time.perf_counter()
        # Created with Ctrl-C held back: interrupted half-way, the engine may go on to make a
        # container after our removal of it failed. Named before it exists, so that one that
        # failed some other way can still be found and removed.
        self._name = f"unibench-{os.getpid()}-{next(_containers)}"
        try:
            with signals_deferred():
                self._container = self._create(
                    image, workload, settings, places, published, mounts, cpus
                )
        except BaseException:
            self._remove_by_name()
            self._close_disks()
            raise
        self.phases["create"] = time.perf_counter() - began
        try:
            # Attached before start, as `docker run` does, so no early line is missed.
            sock = client.api.attach_socket(
                str(self._container.id), params={"stdout": 1, "stderr": 1, "stream": 1}
            )
            self.console = ConsoleWatcher(attach_chunks(sock), name=workload.name)
            self.console.start()
        except BaseException:  # Ctrl-C too: nobody holds this instance yet to stop it
            self.stop()
            raise

    def _create(
        self,
        image: str,
        workload: Workload,
        settings: LaunchSettings,
        places: dict[str, str],
        published: dict[str, tuple[str, int]],
        mounts: list[docker.types.Mount],
        cpus: set[int] | None,
    ) -> Any:
        script = f"{WORKDIR}/{workload.script.name}"
        return self._client.containers.create(
            image,
            command=["python3", *workload.argv(places, script, settings.workload_params)],
            ports=published,
            mounts=mounts,
            name=self._name,
            labels={LABEL: token(), **settings.labels},
            cpuset_cpus=",".join(map(str, sorted(cpus))) if cpus else None,
            mem_limit=f"{settings.memory_mib}m" if settings.memory_mib else None,
            detach=True,
        )

    def _remove_by_name(self) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self._client.api.remove_container(self._name, force=True)

    def _close_disks(self) -> None:
        for disk in self._disks:
            disk.close()

    def start(self) -> float:
        t0 = time.perf_counter()
        self._container.start()
        self.phases["start_call"] = time.perf_counter() - t0
        return t0

    def address(self, port: str) -> tuple[str, int] | None:
        return self._ports.get(port)

    def usage(self) -> Usage:
        try:
            stats: dict[str, Any] = self._container.stats(stream=False, one_shot=True)
        except docker.errors.APIError:
            return Usage(cpu_seconds=None, peak_memory_bytes=None)
        cpu_ns = stats.get("cpu_stats", {}).get("cpu_usage", {}).get("total_usage")
        # max_usage exists under cgroup v1 only; under v2, the cgroup's own memory.peak.
        peak = stats.get("memory_stats", {}).get("max_usage") or self._cgroup_v2_peak()
        return Usage(
            cpu_seconds=cpu_ns / 1e9 if cpu_ns else None,
            peak_memory_bytes=float(peak) if peak else None,
        )

    def _cgroup_v2_peak(self) -> int | None:
        with contextlib.suppress(docker.errors.APIError):
            self._container.reload()
            pid = self._container.attrs.get("State", {}).get("Pid")
            return cgroup_v2_peak(pid) if pid else None
        return None

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            self._remove_by_name()
            if hasattr(self, "console"):
                self.console.join(timeout=5)
        finally:
            self._close_disks()


class DockerTarget(Target):
    def __init__(self, name: str, base_image: str, description: str) -> None:
        self.name = name
        self.base_image = base_image
        self.description = description
        self._client: docker.DockerClient | None = None
        self._images: dict[str, str] = {}

    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = engine()
        return self._client

    def availability(self) -> Availability:
        try:
            self.client().ping()
        except Exception as exc:
            self._client = None
            return Availability(
                False,
                f"no Docker engine answers ({type(exc).__name__}: {exc})",
                "./bench starts dockerd on first use; or install docker.io and run dockerd as root",
            )
        return Availability(True)

    def prepare(
        self, workload: Workload, log: Log, own: Sequence[Mapping[str, str]] = ({},)
    ) -> None:
        client = self.client()
        base_tag = docker_images.ensure_image(client, self.base_image, log)
        self._images[workload.name] = workload_image(client, base_tag, workload, log)

    def image(self, workload: Workload) -> str:
        """The image prepare() built for the workload."""
        if workload.name not in self._images:
            raise RuntimeError(f"{self.name}: prepare() was not called for {workload.name}")
        return self._images[workload.name]

    def create(self, workload: Workload, settings: LaunchSettings) -> Instance:
        return ContainerInstance(self.client(), self.image(workload), workload, settings)

    def link_offloads(self, workload: Workload) -> tuple[Offload, ...]:
        return ("on",)  # the published port is loopback's, and the bridge's veth offloads

    def image_size(
        self, workload: Workload, build: str | None, log: Log, own: Mapping[str, str] | None = None
    ) -> ImageSize:
        """Each image's size as the engine reports it (its layers, unpacked), and the bytes of
        `docker save`'s tar stream once compressed: the workload's image, and its base."""
        client = self.client()
        base_tag = docker_images.ensure_image(client, self.base_image, log)
        tag = workload_image(client, base_tag, workload, log)
        measured = {}
        for name, image_tag in (("image", tag), ("base_image", base_tag)):
            image = client.images.get(image_tag)
            measured[name] = (int(image.attrs["Size"]), zlib_size(image.save(CHUNK)))
        return ImageSize(total=measured["image"], parts={"base_image": measured["base_image"]})

    def metadata(self) -> dict[str, object]:
        version = self.client().version()
        return {
            "accel": "native",
            "engine_version": version.get("Version"),
            "base_image": self.base_image,
            "images": dict(self._images),
        }


def docker_targets() -> list[Target]:
    return [
        DockerTarget("docker", "debian-python", "a Debian container with python3 (slim-like)"),
        DockerTarget(
            "docker-minimal", "python-minimal", "a container holding only the Python interpreter"
        ),
    ]
