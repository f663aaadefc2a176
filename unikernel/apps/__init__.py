"""Reusable appliances: whole applications built from the library OS, each a `main` an image
can run (see workloads/unikernel/*/config.py)."""
