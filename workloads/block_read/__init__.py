"""The block_read workload: random reads over a disk, with fio on Linux and our appliance on the
unikernel."""
