"""nginx/render.sh run as the image's entrypoint runs it, for the suites that check what
it writes or refuses (stack: the launcher's inputs; containers: cluster settings)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

RENDER = Path(__file__).resolve().parents[1] / "nginx" / "render.sh"


def render(out: Path, **env: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "NGINX_RUN_DIR": str(out / "run")}
    return subprocess.run(
        ["sh", str(RENDER), str(out)],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=False,
    )
