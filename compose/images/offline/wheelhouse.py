"""Fill a wheelhouse for offline image builds (Dockerfile's WHEELHOUSE=true), on the host.

Build containers on the test machine cannot use the package index (TLS), the host can.
This exports the locked runtime dependencies (and the lock's `load` group, for the Locust
image) with `uv export`, keeps the requirements whose environment markers hold for the
Python of the target image (read by running python3 in it: Debian's 3.11.2 needs wheels
that the host's 3.11.x does not), and downloads them as manylinux x86_64 wheels for that
Python, each checked against the lock's hashes, together with uv itself.

    .tools/bin/python compose/images/offline/wheelhouse.py OUT_DIR --image IMAGE [--uv PATH]

Run it with a Python that has pip (.tools/ has, .venv has not).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from pip._vendor.packaging.markers import Marker

REPO = Path(__file__).resolve().parents[3]
UV_VERSION = "0.9.30"

# The target's marker environment, computed inside it (packaging.markers.default_environment).
ENV_PROBE = r"""
import json, os, platform, sys
impl = sys.implementation
ver = "{0.major}.{0.minor}.{0.micro}".format(impl.version)
print(json.dumps({
    "implementation_name": impl.name, "implementation_version": ver,
    "os_name": os.name, "platform_machine": platform.machine(),
    "platform_release": platform.release(), "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}))
"""


def target_environment(image: str) -> dict:
    out = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "python3",
            image,
            "-c",
            ENV_PROBE,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def requirements(uv: str, *groups: str) -> list[str]:
    """`uv export` as a list of requirement blocks: 'name==version[ ; marker]' + hashes."""
    out = subprocess.run(
        [uv, "export", "--frozen", "--no-emit-project", "--no-annotate", "--no-header", *groups],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    blocks, current = [], []
    for line in out.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" ") and current:
            blocks.append(" ".join(current))
            current = []
        current.append(line.strip().rstrip("\\").strip())
    if current:
        blocks.append(" ".join(current))
    return blocks


def for_target(blocks: list[str], env: dict) -> list[str]:
    kept = []
    for block in blocks:
        spec, hashes = block.split(" --hash=", 1)
        name, _, marker = spec.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate(env):
            continue
        kept.append(f"{name.strip()} --hash={hashes}")
    return kept


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--image", required=True, help="the base image the wheels are for")
    parser.add_argument("--uv", default=str(REPO / ".tools" / "bin" / "uv"))
    opts = parser.parse_args()

    env = target_environment(opts.image)
    if env["platform_machine"] != "x86_64":
        sys.exit(f"wheelhouse: only x86_64 targets are supported, not {env['platform_machine']}")
    pyver = env["python_full_version"]
    abi = "cp" + "".join(env["python_version"].split("."))
    wanted = for_target(requirements(opts.uv, "--no-default-groups"), env)
    wanted += for_target(requirements(opts.uv, "--only-group", "load"), env)
    wanted = sorted(set(wanted))

    # pip does not widen an explicit manylinux_2_X platform to older ones: list them.
    platforms = ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"]
    platforms += [f"manylinux_2_{v}_x86_64" for v in range(5, 37)]
    common = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        pyver,
        "--abi",
        abi,
        "--abi",
        "abi3",
        "--abi",
        "none",
        *(arg for p in platforms for arg in ("--platform", p)),
        "-d",
        str(opts.out),
    ]
    opts.out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as req:
        req.write("\n".join(wanted) + "\n")
        req.flush()
        subprocess.run([*common, "--require-hashes", "-r", req.name], check=True)
    subprocess.run([*common, f"uv=={UV_VERSION}"], check=True)
    count = len(list(opts.out.glob("*.whl")))
    print(f"wheelhouse {opts.out}: {count} wheels for CPython {pyver} ({len(wanted)} locked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
