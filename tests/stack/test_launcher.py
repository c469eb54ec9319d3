"""`make stack` itself, the nginx templates and the server configurations, each checked
without the shared stack: bad input gets one clear sentence, Ctrl-C leaves nothing."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from localstack.servers import ServerError, binary, free_ports
from localstack.stack import Stack, http_get

from .. import nginx_render
from .make_stack import make_stack, tokens_from

ROOT = Path(__file__).resolve().parents[2]
RENDER = nginx_render.RENDER


UPSTREAMS = {
    "CHAT_WEB_UPSTREAM": "127.0.0.1:9000",
    "CHAT_WS_UPSTREAM": "127.0.0.1:9001,127.0.0.1:9002",
}


def render(out: Path, **env: str) -> subprocess.CompletedProcess:
    return nginx_render.render(out, **{**UPSTREAMS, **env})


def test_rendered_nginx_config_passes_nginx_t(tmp_path):
    done = render(tmp_path, CHAT_STATIC_ROOT="/srv/static/", NGINX_BIND="127.0.0.1")
    assert done.returncode == 0, done.stderr
    server = (tmp_path / "conf.d" / "chat.conf").read_text()
    assert "listen 127.0.0.1:8080 default_server;" in server
    upstreams = (tmp_path / "snippets" / "upstreams.conf").read_text()
    assert upstreams.count("server 127.0.0.1:900") == 3
    routes = (tmp_path / "snippets" / "routes.conf").read_text()
    assert "alias /srv/static/;" in routes
    assert "${" not in "".join(p.read_text() for p in tmp_path.rglob("*.conf"))
    nginx = binary("nginx", "/usr/sbin")
    conf = str(tmp_path / "nginx.conf")
    check = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", conf, "-e", "stderr"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"NGINX_PORT": "http"}, "NGINX_PORT must be a port number"),
        ({"NGINX_PORT": "70000"}, "out of range"),
        ({"NGINX_BIND": "0.0.0.0 ; evil"}, "NGINX_BIND must be an address"),
        ({"CHAT_WS_UPSTREAM": " , "}, "CHAT_WS_UPSTREAM is empty"),
        ({"CHAT_WEB_UPSTREAM": "web"}, "'web' has no port"),
        ({"CHAT_WS_UPSTREAM": "a:1;evil"}, "is not a host:port address"),
        ({"CHAT_STATIC_ROOT": "static"}, "must be an absolute path"),
        ({"NGINX_FORWARDED_PROTO": "$http_host"}, "NGINX_FORWARDED_PROTO must be"),
        ({"NGINX_CLIENT_MAX_BODY_SIZE": "1 m"}, "NGINX_CLIENT_MAX_BODY_SIZE"),
    ],
)
def test_render_refuses_bad_input_with_one_sentence(tmp_path, env, says):
    done = render(tmp_path, **env)
    assert done.returncode == 2
    assert says in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_render_refuses_an_unknown_placeholder(tmp_path):
    templates = tmp_path / "nginx"
    (templates / "conf.d").mkdir(parents=True)
    (templates / "snippets").mkdir()
    for name in ("render.sh",):
        (templates / name).write_text(RENDER.read_text())
    (templates / "nginx.conf.template").write_text("listen ${NGINX_PORT};\nroot ${TYPO};\n")
    done = subprocess.run(
        ["sh", str(templates / "render.sh"), str(tmp_path / "out")],
        env={"PATH": os.environ["PATH"], "NGINX_RUN_DIR": str(tmp_path / "run")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown placeholder ${TYPO}" in done.stderr


def test_gunicorn_config_comes_from_the_environment():
    code = (
        "import runpy, json; c = runpy.run_path('app/config/gunicorn.py'); "
        "print(json.dumps({k: c[k] for k in ('bind', 'workers', 'threads', 'worker_class', "
        "'forwarded_allow_ips', 'timeout', 'control_socket_disable')}))"
    )
    env = {
        **os.environ,
        "WEB_PORT": "8123",
        "BIND_HOST": "0.0.0.0",
        "GUNICORN_WORKERS": "3",
        "GUNICORN_THREADS": "8",
        "GUNICORN_WORKER_CLASS": "sync",
        "GUNICORN_TIMEOUT": "45",
        "FORWARDED_ALLOW_IPS": "10.0.0.2",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == {
        "bind": ["0.0.0.0:8123"],
        "workers": 3,
        "threads": 8,
        "worker_class": "sync",
        "forwarded_allow_ips": "10.0.0.2",
        "timeout": 45,
        "control_socket_disable": True,
    }


def run_ws(port: int, **extra: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": "x" * 50,
        "ALLOWED_HOSTS": "localhost",
        **extra,
    }
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "app/entrypoint.py", "ws", "--port", str(port)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_ws_role_refuses_a_bad_timeout_with_one_sentence():
    done = run_ws(1, WS_PING_INTERVAL="soon")
    assert done.returncode != 0
    assert "WS_PING_INTERVAL='soon' is not a number of seconds." in done.stderr


def test_ws_role_exits_non_zero_when_its_port_is_taken():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        done = run_ws(busy.getsockname()[1], LOG_FORMAT="json")
    assert done.returncode == 1
    assert "could not listen on 127.0.0.1" in done.stderr


def test_stack_refuses_ports_in_use_before_starting_anything(tmp_path):
    first = free_ports(3)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", first))
        busy.listen()
        stack = Stack(replicas=1, port=first, base_port=first + 1, root=tmp_path / "s")
        with pytest.raises(ServerError, match=rf"{first} for nginx \(STACK_PORT\)"):
            stack.start()
    assert not (tmp_path / "s" / "postgres").exists()
    with pytest.raises(ValueError, match="at least one"):
        Stack(replicas=0)


def _running_under(root: str) -> list[str]:
    """Live processes whose command line or environment mention the state dir."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            text = b" ".join((proc / f).read_bytes() for f in ("cmdline", "environ"))
        except OSError:
            continue
        if root.encode() in text:
            found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
    return found


def _open_files_limits(root: str) -> dict[str, int]:
    """Soft open-files limit of the stack's nginx workers and ws replicas, by command line."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            text = b" ".join((proc / f).read_bytes() for f in ("cmdline", "environ"))
            limits = (proc / "limits").read_text()
        except OSError:
            continue
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        # nginx workers keep no path of their own: they are the master's children.
        master = Path(root, "nginx", "run", "nginx.pid")
        parent = (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
        mine = root.encode() in text or (master.exists() and master.read_text().strip() == parent)
        if not mine or not ("nginx: worker" in cmdline or " ws" in cmdline):
            continue
        soft = re.search(r"Max open files\s+(\d+)", limits).group(1)
        found[f"{proc.name} {cmdline.strip()}"] = int(soft)
    return found


def test_make_stack_runs_serves_writes_env_and_ctrl_c_leaves_nothing(tmp_path):
    with make_stack(
        tmp_path,
        replicas=1,
        # From a shell with Debian's default soft open-files limit (issue: 10,000
        # sockets): nginx and the ws replicas raise their own.
        argv_prefix=("prlimit", "--nofile=1024:"),
        ready_within=120,
        stop_within=60,
    ) as stack:
        first, printed, root = stack["port"], stack["printed"], stack["root"]
        assert f"http://127.0.0.1:{first}/chat/" in printed
        assert f"ws-1       http://127.0.0.1:{first + 2}" in printed
        assert http_get(f"http://127.0.0.1:{first}/chat/")[0] == 200
        assert http_get(f"http://127.0.0.1:{first + 2}/readyz")[0] == 200
        assert oct(stack["env_file"].stat().st_mode & 0o777) == "0o600"
        limits = _open_files_limits(root)
        assert any("nginx: worker" in k for k in limits) and any(" ws" in k for k in limits)
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        needed = min(2 * 10_000 + 1024, hard - 1024)  # localstack's nginx_connection_env
        for process, soft in limits.items():
            assert soft >= min(needed, hard) > 1024, (process, soft)

        # The README's way to reach the running stack: source the env, run manage.py.
        assert len(tokens_from(stack["env_file"], tmp_path, prefix="cli")) == 2
    # make re-raises the interrupt on itself once its recipe is done.
    assert stack["make"].returncode in (0, 2, 130, -signal.SIGINT), stack["out"].read_text()
    assert not _running_under(root)
    for port in (first, first + 1, first + 2):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
