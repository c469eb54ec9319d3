"""The one home of code that leans on library internals.

Everything here works around or reaches into daphne, autobahn, Twisted, channels or
channels_redis where they offer no public seam. Each module's docstring names the
upstream version it tracks and the public seam that would replace it; pins.py records
both the versions and a fingerprint of every upstream function relied on, and
tests/core/test_realtime_pins.py fails with "re-sync …" when an upgrade changes one.
Nothing outside this package imports the fenced modules (the same test checks), and
fast_paths.py can turn each optimisation off for measurement.
"""
