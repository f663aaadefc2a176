"""A workload that never becomes ready: it prints, then sleeps, and never answers a probe."""

import sys
import time

sys.stdout.write("booting, but never ready\n")
sys.stdout.flush()
deadline = time.monotonic() + 600  # bounded even if nobody kills it
while time.monotonic() < deadline:
    time.sleep(1)
