"""The delivery checks themselves: gaps, late and missed deliveries, reconciliation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_delivery_checks_on_made_up_frames():
    done = subprocess.run(
        [sys.executable, str(HERE / "check_tracking.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("ok check_") == 5, done.stdout
