"""The dynamic web appliance: a small Twitter-like service over the log store, served on HTTP."""
