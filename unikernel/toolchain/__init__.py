"""The `unikernel` tool: configure an application for a target, build its image (import pruning,
bytecode, initramfs, kernel) and run it. Everything here runs on the build host, never inside an
image."""
