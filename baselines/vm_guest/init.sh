#!/bin/sh
# unibench: PID 1 of linux-vm-minimal (init=/opt/unibench/init), the linux-vm disk without
# systemd. It mounts what the kernel's file systems need, sets the address from the kernel
# command line, starts the boot workload with the console as its output and sshd beside it, then
# waits for the workload. It stays PID 1 and is the reaper: while dash waits for one child it
# collects every child, including the orphans the kernel re-parents to it. When the workload
# ends the machine powers off, which ends QEMU.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

. /opt/unibench/mounts

# The initramfs loads virtio_net already; asking again costs nothing and covers a new initrd.
modprobe -q virtio_net || true
/opt/unibench/network

python3 -I -S /opt/unibench/boot_probe.py --udp-echo 0.0.0.0:7 </dev/null &
workload=$!
/usr/sbin/sshd </dev/null || echo "unibench-init: sshd did not start" >&2

wait "$workload"
echo "unibench-init: the boot workload exited with status $?; powering off" >&2
sync
echo o >/proc/sysrq-trigger
sleep 10
