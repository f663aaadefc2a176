# unibench: sourced by our inits (linux-vm-minimal's and the Xen lab dom0's) before anything else.
# initramfs-tools moved /dev, /run, /proc and /sys to the root before starting init; mount what
# is not there, and the directories sshd and lock files need.
mountpoint -q /proc || mount -t proc -o nosuid,nodev,noexec proc /proc
mountpoint -q /sys || mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mountpoint -q /dev || mount -t devtmpfs -o nosuid devtmpfs /dev
mountpoint -q /run || mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
mkdir -p /dev/pts /run/sshd /run/lock
mountpoint -q /dev/pts || mount -t devpts -o nosuid,noexec,gid=5,mode=0620 devpts /dev/pts
cat /etc/hostname >/proc/sys/kernel/hostname
