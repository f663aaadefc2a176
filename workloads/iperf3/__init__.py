"""The iperf3 workload: its Linux program and its unikernel application."""
