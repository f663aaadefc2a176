"""The boot_probe workload: its Linux program and its unikernel application."""
