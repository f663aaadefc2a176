"""The dns workload: the Linux servers (NSD, BIND9) and the unikernel's DNS appliance."""
