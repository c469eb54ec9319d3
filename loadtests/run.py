#!/usr/bin/env python
"""`make loadtest`: one headless Locust scenario against a running stack, with reports.

    python loadtests/run.py --scenario fanout --users 100 --duration 60s [--host URL]

Against `make stack` (the default) it reads .stack/env, creates the users and tokens it
needs there (`manage.py create_users`), passes the replicas' own addresses on for the pm
scenario, and writes Locust's CSV files, HTML report, log and criteria.json into
.results/loadtest/<scenario>-<time>/. Against any other HOST, give LOCUST_TOKENS (a
`username token` file for that deployment). `--start-stack` starts a throwaway stack
through tools/localstack's Stack API for the run instead. The exit status is Locust's:
non-zero when a criterion (delivery ratio, p99, errors) was missed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCUSTFILE = REPO / "loadtests" / "locustfile.py"
ENV_FILE = REPO / ".stack" / "env"
SCENARIOS = ("fanout", "rooms", "pm", "mixed", "churn")


def read_env_file(path: Path) -> dict[str, str]:
    """The `export K=V` lines of .stack/env, unquoted."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("export "):
            key, _, raw = line[len("export ") :].partition("=")
            values[key] = " ".join(shlex.split(raw)) if raw else ""
    return values


def create_tokens(app_env: dict[str, str], count: int, prefix: str, out: Path) -> None:
    """`manage.py create_users` against the stack whose environment is `app_env`."""
    env = {**os.environ, **app_env}
    subprocess.run(
        [
            sys.executable,
            str(REPO / "app" / "entrypoint.py"),
            "manage",
            "create_users",
            "--count",
            str(count),
            "--prefix",
            prefix,
            "--tokens-out",
            str(out),
        ],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def locust_command(
    *,
    users: int,
    spawn_rate: float,
    duration: str,
    host: str,
    results: Path,
    processes: int = 1,
    extra: list[str] | None = None,
) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        f"{spawn_rate:g}",
        "--run-time",
        duration,
        "--host",
        host,
        "--csv",
        str(results / "stats"),
        "--html",
        str(results / "report.html"),
        "--logfile",
        str(results / "locust.log"),
        "--only-summary",
    ]
    if processes > 1:
        argv += ["--processes", str(processes)]
    return argv + list(extra or [])


def run_locust(
    scenario: str,
    *,
    users: int,
    duration: str,
    host: str,
    tokens: Path,
    results: Path,
    ws_hosts: str = "",
    spawn_rate: float | None = None,
    processes: int = 1,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
    wait: bool = True,
) -> subprocess.Popen | int:
    """Start Locust for one scenario; its exit code, or the process when wait=False."""
    results.mkdir(parents=True, exist_ok=True)
    rate = spawn_rate or min(50.0, max(5.0, users / 10))
    child_env = {
        **os.environ,
        "LOCUST_SCENARIO": scenario,
        "LOCUST_TOKENS": str(tokens),
        "LOCUST_RESULTS": str(results),
        **({"LOCUST_WS_HOSTS": ws_hosts} if ws_hosts else {}),
        **(env or {}),
    }
    argv = locust_command(
        users=users,
        spawn_rate=rate,
        duration=duration,
        host=host,
        results=results,
        processes=processes,
        extra=extra,
    )
    (results / "command.txt").write_text(shlex.join(argv) + "\n")
    proc = subprocess.Popen(argv, env=child_env, cwd=REPO)
    return proc.wait() if wait else proc


@contextmanager
def throwaway_stack(replicas: int, env: dict[str, str] | None = None) -> Iterator[object]:
    """A stack on free ports through the Stack API (tools/localstack/stack.py)."""
    sys.path.insert(0, str(REPO / "tools"))
    from localstack.servers import free_ports
    from localstack.stack import Stack

    base = free_ports(replicas + 2)
    with Stack(replicas=replicas, port=base, base_port=base + 1, env=env or {}) as stack:
        yield stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="fanout", choices=SCENARIOS)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", default="60s", help="Locust --run-time, e.g. 60s, 5m")
    parser.add_argument("--spawn-rate", type=float, default=None)
    parser.add_argument("--host", default="", help="default: the running `make stack`")
    parser.add_argument("--processes", type=int, default=1, help="Locust processes")
    parser.add_argument("--start-stack", action="store_true", help="run on a throwaway stack")
    parser.add_argument("--replicas", type=int, default=3, help="with --start-stack")
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument(
        "--env-file", type=Path, default=ENV_FILE, help="the stack's environment (.stack/env)"
    )
    opts, extra = parser.parse_known_args(argv)
    if opts.users < 1:
        parser.error("--users must be at least 1")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    results = opts.results or REPO / ".results" / "loadtest" / f"{opts.scenario}-{stamp}"
    tokens_env = os.environ.get("LOCUST_TOKENS", "")

    def go(host: str, app_env: dict[str, str] | None, ws_hosts: str) -> int:
        tokens = Path(tokens_env) if tokens_env else results / "tokens.txt"
        if not tokens_env:
            if app_env is None:
                print(
                    "No tokens: against another HOST set LOCUST_TOKENS to a 'username token' "
                    "file (manage.py create_users --tokens-out) for that deployment.",
                    file=sys.stderr,
                )
                return 2
            results.mkdir(parents=True, exist_ok=True)
            create_tokens(app_env, opts.users, f"lt{opts.scenario[:2]}", tokens)
        print(f"locust {opts.scenario}: {opts.users} users for {opts.duration} against {host}")
        code = run_locust(
            opts.scenario,
            users=opts.users,
            duration=opts.duration,
            host=host,
            tokens=tokens,
            results=results,
            ws_hosts=ws_hosts,
            spawn_rate=opts.spawn_rate,
            processes=opts.processes,
            extra=extra,
        )
        shown = results.relative_to(REPO) if results.is_relative_to(REPO) else results
        print(f"reports in {shown}/ (report.html, stats_*.csv, criteria.json); exit {code}")
        return int(code)  # type: ignore[arg-type]

    if opts.start_stack:
        with throwaway_stack(opts.replicas) as stack:
            urls = ",".join(r.url for r in stack.replicas)  # type: ignore[attr-defined]
            return go(stack.url, stack.env, urls)  # type: ignore[attr-defined]
    host = opts.host or os.environ.get("HOST", "")
    app_env = read_env_file(opts.env_file) if opts.env_file.exists() else None
    if not host:
        if app_env is None:
            parser.error("no stack: start `make stack` first, or give HOST=… (or --start-stack)")
        host = app_env["STACK_URL"]
    elif app_env is not None and host.rstrip("/") != app_env.get("STACK_URL"):
        app_env = None  # another deployment: its tokens must come from LOCUST_TOKENS
    ws_hosts = app_env.get("STACK_WS_URLS", "") if app_env else ""
    return go(host, app_env, ws_hosts)


if __name__ == "__main__":
    sys.exit(main())
