"""The chat load tests: one entry for `make loadtest`, compose and the Kubernetes Job.

The scenario is chosen with LOCUST_SCENARIO (fanout | rooms | pm | mixed | churn; default
fanout) when this file is imported, so master and workers must all have it set; only
that scenario's user classes (and shape) are visible to Locust. Everything else is a
Locust option or LOCUST_* variable (`locust -f loadtests/locustfile.py --help`, section
"chat load test"). See loadtests/README.md.

    LOCUST_SCENARIO=fanout LOCUST_TOKENS=tokens.txt locust -f loadtests/locustfile.py \\
        --headless -u 100 -r 20 -t 60s -H http://127.0.0.1:8080
"""

from __future__ import annotations

import os
import sys

from chatload import criteria, options
from chatload.scenarios import SCENARIOS

_name = os.environ.get("LOCUST_SCENARIO", "fanout")
if _name not in SCENARIOS:
    sys.exit(f"LOCUST_SCENARIO={_name!r} is not one of: {', '.join(options.SCENARIOS)}")
_scenario = SCENARIOS[_name]

# Locust runs the User and LoadTestShape classes it finds in this module's namespace.
globals().update({cls.__name__: cls for cls in _scenario.users})
if _scenario.shape is not None:
    globals()[_scenario.shape.__name__] = _scenario.shape

criteria.install(_scenario.criteria)
