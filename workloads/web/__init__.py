"""The web workload: the benchmark's static site, and nginx and Apache httpd serving it."""
