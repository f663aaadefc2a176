"""Load generators the suites drive as programs of their own: locust (its master and workers,
with our sessions) and wrk."""
