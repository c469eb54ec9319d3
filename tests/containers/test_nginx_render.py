"""nginx/render.sh's settings for clusters and compose, rendered on the host (plain sh and
awk, no container): run-time name resolution (NGINX_RESOLVER), the connection budget, the
trusted proxies in front (NGINX_REAL_IP_FROM), /static/ from disk or from the web tier,
the per-address limits, and one clear sentence for every bad value. `nginx -t` of these
configurations runs in the nginx image (test_images.py)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from ..nginx_render import RENDER, render


def rendered(out: Path, **env: str) -> dict[str, str]:
    done = render(out, **env)
    assert done.returncode == 0, done.stderr
    files = {str(p.relative_to(out)): p.read_text() for p in out.rglob("*.conf")}
    assert "${" not in "".join(files.values())
    assert "#@" not in "".join(files.values())
    return files


@pytest.fixture
def resolv_conf(tmp_path) -> Path:
    path = tmp_path / "resolv.conf"
    path.write_text("search example.internal\nnameserver 127.0.0.11\nnameserver 10.0.0.2\n")
    return path


def test_default_resolves_names_once_into_upstream_blocks(tmp_path):
    conf = rendered(tmp_path / "out")
    upstreams = conf["snippets/upstreams.conf"]
    assert "upstream chat_web {" in upstreams and "server web:8000" in upstreams
    assert "upstream chat_ws {" in upstreams and "server ws:8000" in upstreams
    # nginx's idle upstream connections close before gunicorn's 5 s keepalive does.
    web_block = upstreams.split("upstream chat_web {")[1].split("}")[0]
    assert "keepalive_timeout 4s;" in web_block
    server = conf["conf.d/chat.conf"]
    assert not re.search(r"^\s*(resolver|set_real_ip_from) ", server, re.M)
    assert "set $chat_web_peer chat_web;" in server and "set $chat_ws_peer chat_ws;" in server
    main = conf["nginx.conf"]
    assert "worker_connections 4096;" in main and "worker_rlimit_nofile 5120;" in main


def test_resolver_auto_looks_names_up_at_run_time(tmp_path, resolv_conf):
    conf = rendered(tmp_path / "out", NGINX_RESOLVER="auto", NGINX_RESOLV_CONF=str(resolv_conf))
    server = conf["conf.d/chat.conf"]
    # The first nameserver; search domains play no part (nginx's resolver ignores them).
    assert "resolver 127.0.0.11 valid=5s;" in server
    assert "set $chat_web_peer web:8000;" in server and "set $chat_ws_peer ws:8000;" in server
    # No upstream block: its names would be resolved once, at start.
    assert "upstream " not in re.sub(r"#.*", "", conf["snippets/upstreams.conf"])
    routes = conf["snippets/routes.conf"]
    assert routes.count("proxy_pass http://$chat_web_peer;") == 3  # /, /static/, logins
    assert "proxy_pass http://$chat_ws_peer;" in routes


def test_resolver_keeps_blocks_for_lists_and_addresses(tmp_path):
    conf = rendered(
        tmp_path / "out",
        NGINX_RESOLVER="fd00::a",
        NGINX_RESOLVER_VALID="30s",
        CHAT_WEB_UPSTREAM="web-pods.chat.svc.cluster.local:8000",
        CHAT_WS_UPSTREAM="10.1.0.5:8000,10.1.0.6:8000",
    )
    server = conf["conf.d/chat.conf"]
    assert "resolver [fd00::a] valid=30s;" in server
    assert "set $chat_web_peer web-pods.chat.svc.cluster.local:8000;" in server
    assert "set $chat_ws_peer chat_ws;" in server
    upstreams = conf["snippets/upstreams.conf"]
    assert "upstream chat_web" not in upstreams and upstreams.count("server 10.1.0.") == 2
    conf = rendered(tmp_path / "ip", NGINX_RESOLVER="10.96.0.10", CHAT_WEB_UPSTREAM="10.1.0.7:80")
    assert "set $chat_web_peer chat_web;" in conf["conf.d/chat.conf"]


def test_connection_budget_sizes_workers(tmp_path):
    main = rendered(tmp_path / "a", NGINX_CONNECTION_BUDGET="4000")["nginx.conf"]
    assert "worker_connections 9024;" in main and "worker_rlimit_nofile 10048;" in main
    main = rendered(
        tmp_path / "b", NGINX_CONNECTION_BUDGET="4000", NGINX_WORKER_CONNECTIONS="2048"
    )["nginx.conf"]
    assert "worker_connections 2048;" in main and "worker_rlimit_nofile 3072;" in main


def test_real_ip_from_trusted_proxies(tmp_path):
    server = rendered(tmp_path / "out", NGINX_REAL_IP_FROM="10.0.0.0/8, 192.168.1.7,fd00::/8")[
        "conf.d/chat.conf"
    ]
    assert re.findall(r"set_real_ip_from (\S+);", server) == [
        "10.0.0.0/8",
        "192.168.1.7",
        "fd00::/8",
    ]
    assert "real_ip_header X-Forwarded-For;" in server and "real_ip_recursive on;" in server


def test_websocket_handshakes_go_to_the_next_replica_on_a_refusal(tmp_path):
    """A draining replica (a refused connection) or a busy one (503 before the upgrade)
    passes the handshake on, every replica once; a 503 never marks a replica down."""
    out = rendered(tmp_path / "out", CHAT_WS_UPSTREAM="a:1,b:2")
    ws = out["snippets/routes.conf"].split("location /ws/ {")[1].split("\n}")[0]
    assert "proxy_next_upstream error timeout http_503;" in ws
    assert "proxy_next_upstream_tries 0;" in ws
    upstream = out["snippets/upstreams.conf"].split("upstream chat_ws {")[1].split("}")[0]
    assert "server a:1 max_fails=0;" in upstream and "server b:2 max_fails=0;" in upstream


def test_static_files_fall_back_to_every_web_peer(tmp_path):
    routes = rendered(tmp_path / "out", CHAT_STATIC_ROOT="/srv/static")["snippets/routes.conf"]
    static = routes.split("location /static/ {")[1].split("\n}")[0]
    assert "alias /srv/static/;" in static and "try_files $uri @static_app;" in static
    fallback = routes.split("location @static_app {")[1].split("\n}")[0]
    assert "proxy_next_upstream error timeout http_404;" in fallback
    assert "proxy_next_upstream_tries 0;" in fallback
    assert "add_header Cache-Control $chat_static_cache_control;" in fallback
    assert "proxy_cache " not in routes


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"NGINX_RESOLVER": "10.0.0.1; evil"}, "NGINX_RESOLVER must be auto or one DNS server"),
        ({"NGINX_RESOLVER_VALID": "five"}, "NGINX_RESOLVER_VALID must look like 5s"),
        ({"NGINX_RESOLVER_VALID": "5x"}, "NGINX_RESOLVER_VALID must look like 5s"),
        ({"NGINX_CONNECTION_BUDGET": "lots"}, "NGINX_CONNECTION_BUDGET must be a number"),
        ({"NGINX_CONNECTION_BUDGET": "0"}, "NGINX_CONNECTION_BUDGET 0 is out of range"),
        ({"NGINX_CONNECTION_BUDGET": "99999999"}, "is out of range"),
        ({"NGINX_WORKER_CONNECTIONS": "10"}, "NGINX_WORKER_CONNECTIONS 10 is out of range"),
        ({"NGINX_WORKER_CONNECTIONS": "4k"}, "NGINX_WORKER_CONNECTIONS must be a number"),
        ({"NGINX_REAL_IP_FROM": "10.0.0.0/8;evil"}, "'10.0.0.0/8;evil' is not an address"),
        ({"NGINX_REAL_IP_FROM": "10.0.0.0/x"}, "is not an address or CIDR"),
        ({"NGINX_REAL_IP_FROM": "proxy.local"}, "is not an address or CIDR"),
        ({"NGINX_REAL_IP_FROM": " , "}, "NGINX_REAL_IP_FROM has no address"),
        ({"NGINX_WS_CONN_PER_ADDRESS": "0"}, "NGINX_WS_CONN_PER_ADDRESS must be a positive"),
        ({"NGINX_WS_CONN_PER_ADDRESS": "many"}, "NGINX_WS_CONN_PER_ADDRESS must be a positive"),
        ({"NGINX_WS_RATE": "10/s"}, "NGINX_WS_RATE must look like 10r/s or 20r/m"),
        ({"NGINX_WS_RATE": "5r/h"}, "NGINX_WS_RATE must look like 10r/s or 20r/m"),
        ({"NGINX_AUTH_RATE": "0r/m"}, "NGINX_AUTH_RATE must look like 10r/s or 20r/m"),
        ({"NGINX_AUTH_BURST": "-1"}, "NGINX_AUTH_BURST must be a positive number"),
    ],
)
def test_render_refuses_bad_values_with_one_sentence(tmp_path, env, says):
    done = render(tmp_path, **env)
    assert done.returncode == 2
    assert says in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_resolver_auto_without_a_nameserver_says_so(tmp_path):
    empty = tmp_path / "resolv.conf"
    empty.write_text("search example.internal\n")
    done = render(tmp_path / "out", NGINX_RESOLVER="auto", NGINX_RESOLV_CONF=str(empty))
    assert done.returncode == 2
    assert f"found no nameserver in {empty}" in done.stderr, done.stderr


def test_conditional_blocks_are_checked(tmp_path):
    """`#@if` names a rendered value and is closed: a typo is an error, not a silent drop."""
    templates = tmp_path / "nginx"
    (templates / "conf.d").mkdir(parents=True)
    (templates / "render.sh").write_text(RENDER.read_text())
    for text, says in (
        ("#@if NGINX_RESOLVR_ADDRESS\nresolver x;\n#@end\n", "unknown #@if NGINX_RESOLVR_ADDRESS"),
        ("#@if NGINX_REAL_IP_LINES\nx;\n", "#@if without #@end"),
    ):
        (templates / "nginx.conf.template").write_text(text)
        done = subprocess.run(
            ["sh", str(templates / "render.sh"), str(tmp_path / "out")],
            env={"PATH": os.environ["PATH"], "NGINX_RUN_DIR": str(tmp_path / "run")},
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 2 and says in done.stderr, done.stderr


def test_per_address_limits_render_only_when_set(tmp_path):
    off = rendered(tmp_path / "off")
    assert "limit_conn " not in off["snippets/routes.conf"]
    assert "limit_req " not in off["snippets/routes.conf"]
    on = rendered(
        tmp_path / "on",
        NGINX_WS_CONN_PER_ADDRESS="120",
        NGINX_WS_RATE="10r/s",
        NGINX_AUTH_RATE="20r/m",
    )
    server, routes = on["conf.d/chat.conf"], on["snippets/routes.conf"]
    assert "zone=chat_ws_req:10m rate=10r/s;" in server
    assert "zone=chat_auth_req:10m rate=20r/m;" in server
    ws = routes.split("location /ws/ {")[1].split("}")[0]
    assert "limit_conn chat_ws_conn 120;" in ws
    assert "limit_req zone=chat_ws_req burst=40 nodelay;" in ws
    assert "limit_req zone=chat_auth_req burst=10 nodelay;" in routes
