#!/bin/sh
# unibench: give eth0 the address the launcher put on the kernel command line, as
# unibench.ip=ADDRESS/PREFIX (for example unibench.ip=10.203.0.2/24), so that the image itself
# names no address. Run by unibench-network.service on linux-vm and by /opt/unibench/init on
# linux-vm-minimal. Without the parameter only the loopback comes up.
set -eu
PATH=/usr/sbin:/usr/bin:/sbin:/bin
device=eth0  # net.ifnames=0 on the kernel command line keeps the kernel's name
# The Xen lab's dom0 names a bridge: eth0 joins it, and the bridge takes the address, so that the
# guests on the bridge share eth0's link.
bridge="${UNIBENCH_BRIDGE:-}"

address=
for word in $(cat /proc/cmdline); do
    case "$word" in
        unibench.ip=*) address="${word#unibench.ip=}" ;;
    esac
done

ip link set lo up
if [ -z "$address" ]; then
    echo "unibench-network: no unibench.ip= on the kernel command line; $device left down" >&2
    exit 0
fi

# systemd starts us once udev has the device; without systemd the driver may still be binding.
tries=0
while [ ! -e "/sys/class/net/$device" ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ]; then
        echo "unibench-network: no $device after 10 s" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -n "$bridge" ]; then
    ip link add "$bridge" type bridge forward_delay 0 stp_state 0
    ip link set "$device" master "$bridge"
    ip link set "$device" up
    device="$bridge"
fi
ip address replace "$address" dev "$device"
ip link set "$device" up
