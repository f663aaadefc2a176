"""The host toolkit both halves of unibench stand on: the artifact cache, the KVM/TCG probe, QEMU
and xl arguments, Debian packages, debootstrap and rootfs archives, ELF and ldd, cpio, disk images,
network namespaces and SSH. It imports neither the unikernel, the baselines nor the harness."""
