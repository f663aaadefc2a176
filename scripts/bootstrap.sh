#!/usr/bin/env bash
# Brings a fresh Debian machine to the state unibench needs, doing only what is missing:
# Debian packages, the project's virtual environment, and a running Docker engine.
# Sourced by ./bench and ./run-tests; quiet when there is nothing to do.
set -euo pipefail

UNIBENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$UNIBENCH_ROOT/.venv"
DEBIAN_PACKAGES=(docker.io debootstrap iproute2 git ca-certificates curl chromium qemu-system-x86
    iputils-ping netcat-openbsd dnsmasq-base iperf3 ethtool e2fsprogs qemu-utils openssh-client fio
    nsd bind9 dnsperf bind9-dnsutils nginx apache2 wrk)
# Servers the suites start themselves, on ports of their own: never as the host's services.
SERVICES_KEPT_OFF=(nsd named nginx apache2)

say() { printf 'bootstrap: %s\n' "$*" >&2; }

missing_debian_packages() {
    local pkg
    for pkg in "${DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || echo "$pkg"
    done
}

install_debian_packages() {
    local missing
    missing=$(missing_debian_packages)
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        say "missing Debian packages: $missing; run as root or install them with apt-get"
        exit 1
    fi
    say "installing Debian packages: $missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # No package may start its service while installing (NSD and BIND9 would both take port 53);
    # a policy-rc.d of our own says so, unless the machine has one already.
    local policy=/usr/sbin/policy-rc.d ours=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && ours=1
    fi
    # shellcheck disable=SC2086
    if ! apt-get install -y -qq --no-install-recommends $missing >/dev/null; then
        [ -n "$ours" ] && rm -f "$policy"
        say "apt-get install failed for: $missing"
        exit 1
    fi
    [ -n "$ours" ] && rm -f "$policy"
    if [ -d /run/systemd/system ]; then
        systemctl disable --now "${SERVICES_KEPT_OFF[@]/%/.service}" >/dev/null 2>&1 || true
    fi
}

find_python() {
    local candidate
    for candidate in python3.11 /usr/bin/python3.11; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import venv, ensurepip' >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    say "no Python 3.11 with venv found; install python3.11-venv"
    exit 1
}

ensure_venv() {
    local stamp wanted
    stamp="$VENV/.unibench-stamp"
    wanted=$(sha256sum "$UNIBENCH_ROOT/pyproject.toml" | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
        return 0
    fi
    say "preparing the virtual environment in $VENV"
    [ -x "$VENV/bin/python" ] || "$(find_python)" -m venv "$VENV"
    local log="$VENV/pip-install.log"
    if ! { "$VENV/bin/python" -m pip install --upgrade pip \
        && "$VENV/bin/python" -m pip install -e "$UNIBENCH_ROOT[dev]"; } >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        say "installing the Python dependencies failed; the whole log is in $log"
        exit 1
    fi
    echo "$wanted" >"$stamp"
}

docker_engine_answers() {
    curl -sf --max-time 2 --unix-socket /var/run/docker.sock http://engine/_ping >/dev/null 2>&1
}

ensure_dockerd() {
    docker_engine_answers && return 0
    if [ "$(id -u)" -ne 0 ]; then
        say "no Docker engine answers and only root can start one; docker targets will be unavailable"
        return 0
    fi
    say "starting dockerd (log: /var/log/unibench-dockerd.log)"
    # Detached (setsid, stdin closed, a subshell that exits at once) so the engine is re-parented
    # to init: otherwise the process this script execs into would inherit it as a child.
    # Not marked as a run's (harness/leftovers.py): the engine outlives whoever started it.
    (setsid env -u UNIBENCH_OWNER dockerd </dev/null >/var/log/unibench-dockerd.log 2>&1 &)
    local i
    for i in $(seq 1 60); do
        docker_engine_answers && return 0
        sleep 0.5
    done
    say "dockerd did not answer within 30 s; see /var/log/unibench-dockerd.log"
}

install_debian_packages
ensure_venv
ensure_dockerd
