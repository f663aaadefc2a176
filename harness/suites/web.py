"""The web suite: HTTP serving at scale, as the paper measured its static site (Fig. 13,
connections per second) and its Twitter-like dynamic appliance (Fig. 12, sessions per second
as clients grow).

What it needs: a web server on the target and locust on the host side of the target's link
(inside the link's namespace when the target has one: its master and a worker per core), or
Debian's wrk there for static pages.
- static (`app=static`): the benchmark site (workloads/web/web_server.site_files). Linux
  targets run Debian's nginx or apache2 on it (`server=nginx,apache2`, run by
  workloads/web/web_server.py), and our static appliance in socket mode (`server=sockets`,
  see below); the unikernels our HTTP appliance, the site compiled in as a tar archive and
  served from the tar store (`server=unikernel`).
- dynamic (`app=dynamic`): the microblog appliance (unikernel/apps/microblog: users, follow,
  post, timeline; its data in the writable log store on a blank disk). The unikernels run it
  on our stack; Linux targets run the very same build (the hosted unikernel's archive) with
  the host kernel's TCP instead, its socket mode (`server=sockets`), so the two differ by
  their TCP/IP only.
How it runs: one launch per repeat; once the server says it serves, the generator runs for
`seconds` with `users` simulated users, each running sessions back to back (closed loop; a
session is one connection: static, the site's pages; dynamic, log in, post, read the
timeline as JSON and as HTML). wrk (`generator=wrk`, static only) keeps `users` connections
fetching the 612-byte index page.
What it returns: requests and sessions per second, request latency p50/p95/p99, the error
rate, the cores the generator itself kept busy (`client_cpu`) and whether it was the limit
(`client_bound`: 1 when it used 90 % of its cores or said it was short of CPU; the server's
figure is then a lower bound), and the time from the launch to the server serving.

Scaling (`instances=N`, the paper's Fig. 13 set-up): the unikernels, and the dynamic appliance
everywhere, scale out: N instances, each its own launch with its own address, the users
shared out among them (a locust master per instance, the workers shared too). nginx and
apache2 on Linux targets scale up: one host of N CPUs (a VM's vCPUs, a process or container
pinned to N CPUs) running N server workers. wrk loads single instances only.

Parameters: app (static, dynamic), users (10, 50, 100), seconds (10), generator (locust;
wrk too for static), instances (1), memory (MiB, for VMs: the image's own size, or the Linux
VM's, unless asked), server (each target takes the servers of its kind from what is asked).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import ClassVar

from harness.load.locust_run import run_locust
from harness.load.report import LoadReport
from harness.load.wrk import run_wrk
from harness.model import Measurement, Metric, Params
from harness.suites.base import MEMORY, Param, RepeatContext, Suite, choice, whole
from harness.targets.base import Instance, Log, Target, Workload
from unikernel.devices import Console, Device, Disk, Network, Port
from unikernel.toolchain.app import load_app
from unikernel.toolchain.image import build
from workloads import linux_script, unikernel_app
from workloads.web.web_server import READY_LINE, SITE_PAGES, extra_files

REQUESTS = Metric("requests_per_second", "requests/s", "higher")
SESSIONS = Metric("sessions_per_second", "sessions/s", "higher")
LATENCY_P50 = Metric("request_latency_p50", "s", "lower")
LATENCY_P95 = Metric("request_latency_p95", "s", "lower")
LATENCY_P99 = Metric("request_latency_p99", "s", "lower")
ERRORS = Metric("error_rate", "ratio", "lower")
CLIENT_CPU = Metric("client_cpu", "cores", "lower")
CLIENT_BOUND = Metric("client_bound", "bool", "lower")
READY = Metric("time_to_serving", "s", "lower")

APPS = ("static", "dynamic")
STATIC_SERVERS = ("nginx", "apache2")
SOCKETS_SERVER = "sockets"  # our appliance on the host kernel's TCP (Linux targets)
UNIKERNEL_SERVER = "unikernel"
GENERATORS = ("locust", "wrk")
HTTP = Port("http", "tcp", number=80)
STORE_MIB = 64
DYNLOAD = "/usr/lib/python3.11/lib-dynload"  # Debian's, as in the images
EXTENSION_SUFFIX = ".cpython-311-x86_64-linux-gnu.so"
LOAD_GRACE = 60.0  # seconds past the run's length for the generator to start and finish


@cache
def static_workload() -> Workload:
    """The static site: nginx or apache2 on Linux targets, our appliance on the unikernels.
    Made when first needed: it looks for the servers' files on this host."""
    return Workload(
        name="web-static",
        script=linux_script("web", "web_server.py"),
        args=("--server", "{server}", "--listen", "{http}", "--workers", "{instances}"),
        devices=(Console(ready_marker=READY_LINE), Network(ports=(HTTP,))),
        unikernel_app=unikernel_app("web"),
        programs=("nginx", "apache2"),
        program_data=tuple(extra_files("nginx") + extra_files("apache2")),
    )


# Our appliances, as unikernel applications; Linux targets run their hosted builds.
APPLIANCES = {"static": unikernel_app("web"), "dynamic": unikernel_app("microblog")}


@cache
def socket_mode_workload(app: str) -> Workload:
    """Our appliance for `app`: on Linux targets its hosted build (one zip archive Debian's
    python3.11 runs) in socket mode, listening where the target says, the microblog's store
    on the disk the target gives it; on the unikernels the same application, built for them."""
    folder = APPLIANCES[app]
    built = build(load_app(folder), "hosted", log=lambda _: None)
    archive: Path = built.outputs["app"]
    args: tuple[str, ...] = ("UNIKERNEL_NETWORK=sockets", "UNIBENCH_LISTEN={http}")
    devices: tuple[Device, ...] = (Console(ready_marker=READY_LINE), Network(ports=(HTTP,)))
    if app == "dynamic":
        args += ("UNIKERNEL_DISK_STORE={store}",)
        devices += (Disk("store", size_mib=STORE_MIB),)
    return Workload(
        name="microblog" if app == "dynamic" else "web-static-sockets",
        script=archive,
        args=args,
        devices=devices,
        unikernel_app=folder,
        program_data=extension_modules(built.report["kept_modules"]),  # type: ignore[arg-type]
    )


def extension_modules(modules: Sequence[str]) -> tuple[str, ...]:
    """Debian's python3.11 extension modules among `modules`: the archive holds bytecode only,
    and an image with python3-minimal alone lacks some (mmap, _ctypes, _json)."""
    found = (f"{DYNLOAD}/{name}{EXTENSION_SUFFIX}" for name in modules)
    return tuple(path for path in found if Path(path).is_file())


DEFAULTS: dict[str, tuple[str, ...]] = {
    "app": APPS,
    "users": ("10", "50", "100"),
    "seconds": ("10",),
    "generator": ("locust",),
    "instances": ("1",),
}


class WebSuite(Suite):
    name = "web"
    params: ClassVar[Mapping[str, Param] | None] = {
        "app": choice(*APPS),
        "users": whole("users"),
        "seconds": whole("seconds"),
        "generator": choice(*GENERATORS),
        "instances": whole("instances"),
        "server": choice(*STATIC_SERVERS, SOCKETS_SERVER, UNIKERNEL_SERVER),
        "memory": MEMORY,
    }
    description = "static and dynamic HTTP serving with locust (and wrk): requests and sessions/s"
    metrics = (REQUESTS, SESSIONS, LATENCY_P50, LATENCY_P95, LATENCY_P99, ERRORS)
    default_repeat = 3
    default_warmup = 0  # every repeat is a fresh launch

    def workload(self, target: Target) -> Workload:
        return static_workload()

    def workload_for(self, params: Params) -> Workload:
        if params["app"] == "static" and params["server"] != SOCKETS_SERVER:
            return static_workload()  # nginx, apache2, or the unikernel's appliance
        return socket_mode_workload(str(params["app"]))

    def param_sets(self, requested: Mapping[str, Sequence[str]], target: Target) -> list[Params]:
        chosen = {**DEFAULTS, **requested}
        _check_choices("app", chosen["app"], APPS)
        _check_choices("generator", chosen["generator"], GENERATORS)
        for name in ("users", "seconds", "instances", "memory"):
            for value in chosen.get(name, ()):
                if not value.isdigit() or int(value) < 1:
                    raise ValueError(f"{name}={value}: say a whole number, 1 or more")
        unikernel = target.family == "unikernel"
        cores = len(os.sched_getaffinity(0))
        if not unikernel and "static" in chosen["app"]:
            too_many = [n for n in chosen["instances"] if n.isdigit() and int(n) > cores]
            if too_many:
                raise ValueError(
                    f"instances={too_many[0]}: on {target.name} the static servers scale up to "
                    f"one host of that many CPUs, and this machine has {cores}"
                )
        asked_servers = chosen.pop("server", None)
        sets: list[Params] = []
        for app in chosen["app"]:
            servers = servers_for(app, unikernel)
            wanted = (
                servers
                if asked_servers is None
                else tuple(s for s in asked_servers if s in servers)
            )
            generators = chosen["generator"] if app == "static" else ("locust",)
            if not wanted or not generators:
                continue  # asked for servers or generators this app has none of here
            sub = {**chosen, "app": (app,), "server": wanted, "generator": generators}
            # wrk loads one server: it measures single instances only.
            sets += [
                params
                for params in super().param_sets(sub, target)
                if params["generator"] != "wrk" or params["instances"] == "1"
            ]
        if asked_servers is not None:
            known = (*STATIC_SERVERS, SOCKETS_SERVER, UNIKERNEL_SERVER)
            unknown = [s for s in asked_servers if s not in known]
            if unknown:
                raise ValueError(f"server={','.join(unknown)}: the servers are {', '.join(known)}")
        if not sets:
            raise ValueError(
                f"{target.name} runs none of what was asked: static pages on "
                f"{', '.join(servers_for('static', unikernel))}, the dynamic appliance on "
                f"{', '.join(servers_for('dynamic', unikernel))} (and only locust drives the "
                "dynamic one)"
            )
        return sets

    def prepare(
        self, target: Target, workload: Workload, param_sets: Sequence[Params], log: Log
    ) -> None:
        # The runner prepared the static site's workload; the others need their own.
        for other in dict.fromkeys(self.workload_for(params) for params in param_sets):
            if other is not workload:
                target.prepare(other, log)

    def metrics_for(self, params: Params) -> tuple[Metric, ...]:
        if params.get("generator") == "wrk":
            return (REQUESTS, LATENCY_P50, LATENCY_P99, ERRORS)
        return self.metrics

    def run_once(self, target: Target, params: Params, ctx: RepeatContext) -> list[Measurement]:
        instances = int(params["instances"])
        if target.family == "unikernel" or params["app"] == "dynamic":
            launches = instances  # scaled out: one instance each, each its own address
        else:
            # Scaled up: one Linux host of that many CPUs (a VM's vCPUs, a process's or
            # container's CPUs) with as many server workers.
            launches = 1
            if instances > 1 and ctx.settings.cpus is None:
                ctx.settings = dataclasses.replace(ctx.settings, cpus=instances)
        started = []
        for _ in range(launches):
            instance = ctx.create(self.workload_for(params))
            started.append((instance, instance.start()))
        ready = [instance.ready(ctx.deadline)[0] - t0 for instance, t0 in started]
        report = generate_load([instance for instance, _ in started], params, ctx)
        serving = max(ready)  # until the last instance serves
        measured = [
            Measurement(REQUESTS, report.requests_per_second),
            Measurement(LATENCY_P50, report.latency_p50),
            Measurement(LATENCY_P99, report.latency_p99),
            Measurement(ERRORS, report.error_rate),
            Measurement(CLIENT_CPU, report.client_cpu),
            Measurement(CLIENT_BOUND, 1.0 if report.client_bound else 0.0),
            Measurement(READY, serving),
        ]
        if report.sessions_per_second is not None:
            measured.append(Measurement(SESSIONS, report.sessions_per_second))
        if report.latency_p95 is not None:
            measured.append(Measurement(LATENCY_P95, report.latency_p95))
        return measured


def servers_for(app: str, unikernel: bool) -> tuple[str, ...]:
    """The servers a target of the kind runs `app` on."""
    if unikernel:
        return (UNIKERNEL_SERVER,)
    return (*STATIC_SERVERS, SOCKETS_SERVER) if app == "static" else (SOCKETS_SERVER,)


def _check_choices(name: str, values: Sequence[str], known: tuple[str, ...]) -> None:
    unknown = [value for value in values if value not in known]
    if unknown:
        raise ValueError(f"{name}={','.join(unknown)}: say {' or '.join(known)}")


def generate_load(instances: Sequence[Instance], params: Params, ctx: RepeatContext) -> LoadReport:
    places: list[tuple[str, str | None]] = []
    for instance in instances:
        address = instance.address("http")
        if address is None:
            raise RuntimeError("the target gave the web server no address")
        places.append((f"http://{address[0]}:{address[1]}", instance.namespace))
    users = int(params["users"])
    seconds = float(params["seconds"])
    timeout = min(seconds + LOAD_GRACE, ctx.remaining())
    if params["generator"] == "wrk":
        ((url, namespace),) = places
        return run_wrk(
            f"{url}/", connections=users, seconds=seconds, namespace=namespace, timeout=timeout
        )
    report = run_locust(
        places,
        users=users,
        seconds=seconds,
        app=str(params["app"]),
        pages=SITE_PAGES,
        timeout=timeout,
    )
    if report.requests == report.errors:
        raise RuntimeError(f"every one of locust's {report.requests} requests failed")
    return report
