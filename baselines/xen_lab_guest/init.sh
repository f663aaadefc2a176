#!/bin/sh
# unibench: PID 1 of the Xen lab's dom0 (init=/opt/unibench/init). It mounts what the kernel's
# file systems need, starts Xen's dom0 services with Debian's own script (xenfs, xenstored,
# xen-init-dom0, xenconsoled, in that order), loads the back-ends guests' disks and NICs need,
# bridges eth0 into xenbr0 with the address from the kernel command line (so the guests share
# the host's TAP link), starts sshd, and then only reaps children: the harness drives dom0 over SSH.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

. /opt/unibench/mounts
mkdir -p /dev/shm /var/log/xen /var/lib/xen
say() { echo "unibench-xen-lab: $*" >/dev/console; }

for module in virtio_net xen-blkback xen-netback xen-gntalloc xen-privcmd bridge; do
    modprobe -q "$module" || say "modprobe $module failed"
done
say "starting Xen's dom0 services"
/etc/init.d/xen start >/dev/console 2>&1 || say "/etc/init.d/xen start failed with status $?"

UNIBENCH_BRIDGE=xenbr0 /opt/unibench/network || say "the network did not come up"

/usr/sbin/sshd </dev/null || say "sshd did not start"
say "UNIBENCH-XEN-LAB-READY $(xl info 2>&1 | grep -E '^(xen_version|virt_caps|free_memory)' | tr -s ' ' | tr '\n' ' ')"
while true; do
    wait
    sleep 1
done
