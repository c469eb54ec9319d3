"""`make stack` as the README gives it, run and stopped with Ctrl-C by the stack tests."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from localstack.servers import free_ports

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def make_stack(
    tmp_path: Path,
    *make_args: str,
    replicas: int = 2,
    argv_prefix: tuple[str, ...] = (),
    ready_within: float = 180,
    stop_within: float = 90,
) -> Iterator[dict]:
    """`make stack <make_args>` (behind `argv_prefix`, e.g. a prlimit) on free ports until
    the block ends, then Ctrl-C, as in a terminal; yields the first port, the printed
    summary, the env file and its variables, the stack's state dir and the make process.
    After the block: make said it stopped, and the env file and the state dir are gone."""
    first = free_ports(replicas + 2)
    env_file = tmp_path / "env"
    env = {
        **os.environ,
        "WS_REPLICAS": str(replicas),
        "STACK_PORT": str(first),
        "STACK_BASE_PORT": str(first + 1),
        "STACK_ENV_FILE": str(env_file),
        "MAKEFLAGS": "",
    }
    for key in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"):
        env.pop(key, None)
    out = tmp_path / "make.out"
    with out.open("w") as sink:
        make = subprocess.Popen(
            [*argv_prefix, "make", "--no-print-directory", "stack", *make_args],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a terminal's job
        )
    root = None
    try:
        deadline = time.monotonic() + ready_within
        while "Chat stack ready" not in out.read_text():
            assert make.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        printed = out.read_text()
        root = re.search(r"state in (\S+)", printed).group(1)
        values = dict(re.findall(r"^export (\w+)=(.*)$", env_file.read_text(), re.M))
        values = {k: shlex.split(v)[0] if v else "" for k, v in values.items()}
        yield {
            "port": first,
            "printed": printed,
            "env": values,
            "env_file": env_file,
            "root": root,
            "make": make,
            "out": out,
        }
    finally:
        os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        make.wait(stop_within)
    assert "stopped." in out.read_text()
    assert not env_file.exists()
    assert root and not Path(root).exists()


def tokens_from(env_file: Path, tmp_path: Path, prefix: str = "m") -> dict[str, str]:
    """Two users made through the env file, as the README says: `. .stack/env`, manage.py."""
    tokens = tmp_path / "tokens"
    shell = (
        f". {env_file} && {sys.executable} app/manage.py create_users --count 2 "
        f"--prefix {prefix} --tokens-out {tokens}"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DATABASE_"))}
    done = subprocess.run(
        ["bash", "-c", shell], cwd=ROOT, env=clean, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return dict(line.split() for line in tokens.read_text().splitlines())
