"""Xen for the harness: the dom0s it drives guests through, and the lab that gives it one."""
