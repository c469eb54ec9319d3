"""Messages reach everyone whichever replica they are on, directly and through nginx;
pages, static files, health and metrics are where they belong."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

import pytest

from localstack.stack import Stack, http_get

from .conftest import HASHED_STATIC, PASSWORD, log_lines, metric

pytestmark = pytest.mark.stack


def post_message(stack: Stack, room: str, token: str, text: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{stack.url}/api/rooms/{urllib.parse.quote(room)}/messages",
        data=json.dumps({"message": text}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


async def test_room_message_reaches_every_replica_directly_and_via_nginx(
    stack, tokens, clients, room
):
    urls = [stack.ws_url(room, replica=i) for i in (1, 2, 3)] + [stack.ws_url(room)] * 2
    people = [
        await clients.open(url, tokens[f"user{n}"], name=f"user{n}")
        for n, url in enumerate(urls, start=1)
    ]
    said = [await person.say(f"hello from {person.name}") for person in people]
    ids = {m["id"] for m in said}
    assert len(ids) == len(people)
    for person in people:
        await person.until(lambda p=person: ids <= set(p.messages), what="every message")
        for message in said:
            assert person.messages[message["id"]] == message


async def test_private_message_reaches_every_connection_of_the_target(stack, tokens, clients, room):
    alice = await clients.open(stack.ws_url(room, replica=1), tokens["user1"], name="alice")
    alice_elsewhere = await clients.open(
        stack.ws_url(f"{room}-b", replica=3), tokens["user1"], name="alice-2"
    )
    bob_tabs = [
        await clients.open(stack.ws_url(room, replica=2), tokens["user2"], name="bob-r2"),
        await clients.open(stack.ws_url(f"{room}-b", replica=3), tokens["user2"], name="bob-r3"),
        await clients.open(stack.ws_url(f"{room}-c"), tokens["user2"], name="bob-nginx"),
    ]
    await alice.send({"type": "private_message", "to": "user2", "message": "psst"})
    receipt = await alice.next("private_message_delivered")
    assert receipt["target"] == "user2" and receipt["message"] == "psst"
    assert (await alice_elsewhere.next("private_message_delivered"))["id"] == receipt["id"]
    for tab in bob_tabs:
        incoming = await tab.next("private_message")
        assert incoming["id"] == receipt["id"]
        assert (incoming["user"], incoming["to"], incoming["message"]) == ("user1", "user2", "psst")


async def test_user_list_agrees_on_every_replica(stack, tokens, clients, room):
    present = {"user1", "user2", "user3", "user4"}
    for n, replica in zip((1, 2, 3), (1, 2, 3), strict=True):
        await clients.open(stack.ws_url(room, replica=replica), tokens[f"user{n}"])
    await clients.open(stack.ws_url(room), tokens["user4"])
    await clients.open(stack.ws_url(room, replica=1), tokens["user4"])  # a second tab
    for person in clients:
        await person.until(lambda p=person: p.users == present, what="everyone listed")
    # Newcomers on each replica, and through nginx, are told the same list.
    for n, url in enumerate(
        [*(stack.ws_url(room, replica=i) for i in (1, 2, 3)), stack.ws_url(room)], start=5
    ):
        newcomer = await clients.open(url, tokens[f"user{n}"])
        present.add(f"user{n}")
        assert newcomer.users == present


async def test_http_push_via_nginx_reaches_clients_on_all_replicas(stack, tokens, clients, room):
    listeners = [
        await clients.open(stack.ws_url(room, replica=i), tokens[f"user{i}"]) for i in (1, 2, 3)
    ]
    listeners.append(await clients.open(stack.ws_url(room), tokens["user4"]))
    status, body = post_message(stack, room, tokens["user5"], "deploy finished")
    assert status == 201, body
    for listener in listeners:
        frame = await listener.next("chat_message")
        assert frame["id"] == body["id"] and frame["message"] == "deploy finished"
        assert frame["user"] == "user5"


def test_pages_static_files_and_security_headers_through_nginx(stack, tokens):
    status, page = http_get(f"{stack.url}/chat/")
    assert status == 200
    assets = HASHED_STATIC.findall(page.decode())
    assert assets, "the index page links hashed static files"
    with urllib.request.urlopen(stack.url + assets[0], timeout=5) as response:
        assert response.status == 200
        assert "immutable" in response.headers["Cache-Control"]
        assert response.headers["Content-Type"].split(";")[0] in (
            "text/css",
            "application/javascript",
        )
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    unhashed = assets[0].rsplit(".", 2)[0] + "." + assets[0].rsplit(".", 1)[1]
    with urllib.request.urlopen(stack.url + unhashed, timeout=5) as response:
        assert response.headers["Cache-Control"] == "public, max-age=300"
    assert http_get(f"{stack.url}/static/chat/no-such-file.js")[0] == 404
    assert http_get(f"{stack.url}/static/")[0] in (403, 404)  # no directory listing

    with urllib.request.urlopen(f"{stack.url}/accounts/login/", timeout=5) as response:
        headers = response.headers
        assert response.status == 200
    # Each security header once (nginx's), the page's CSP from the app.
    for name, value in {
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }.items():
        assert headers.get_all(name) == [value], name
    assert "Permissions-Policy" in headers
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "nginx/" not in headers.get("Server", "")  # no version


def login_session(stack, username: str) -> str:
    """Log in through nginx with the CSRF-checked form, as a browser; the session id."""
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{stack.url}/accounts/login/", timeout=5) as response:
        assert response.status == 200
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    form = urllib.parse.urlencode(
        {"username": username, "password": PASSWORD, "csrfmiddlewaretoken": csrf}
    ).encode()
    request = urllib.request.Request(
        f"{stack.url}/accounts/login/",
        data=form,
        headers={"Origin": stack.url, "Referer": f"{stack.url}/accounts/login/"},
    )
    with opener.open(request, timeout=5) as response:
        assert response.status == 200  # followed the redirect
    return next(c.value for c in jar if c.name == "sessionid")


def test_login_through_nginx_then_a_session_websocket(stack, tokens, room):
    """The browser path: CSRF-checked form login via nginx, then the cookie on /ws/."""
    session = login_session(stack, "user9")

    async def scenario():
        from loadtests.chatclient.aio import ChatClient

        client = ChatClient(
            stack.ws_url(room),
            headers={"Origin": stack.url, "Cookie": f"sessionid={session}"},
        )
        await client.connect()
        try:
            assert client.users == {"user9"}
            assert (await client.say("from a browser session"))["user"] == "user9"
        finally:
            await client.close()

    asyncio.run(scenario())


def test_readyz_and_healthz_on_every_process(stack):
    for name, url in stack.process_urls().items():
        assert http_get(url + "/healthz") == (200, b'{"status": "ok"}'), name
        status, body = http_get(url + "/readyz")
        ready = {"status": "ready", "dependencies": {"database": "ok", "redis": "ok"}}
        assert (status, json.loads(body)) == (200, ready), name
    assert http_get(stack.url + "/readyz")[0] == 200


@pytest.mark.parametrize(
    "path", ["/metrics", "/metrics/", "//metrics", "/%6Detrics", "/x/../metrics"]
)
def test_metrics_are_not_reachable_through_nginx(stack, path):
    status, body = http_get(stack.url + path)
    assert status == 403, path
    assert b"chat_" not in body


async def test_metrics_count_what_just_happened(stack, tokens, clients, room):
    replica = stack.replica(2)
    before = {
        "accepted": metric(replica.url, "chat_ws_connects_total", outcome="accepted"),
        "stored": metric(replica.url, "chat_messages_stored_total", kind="room"),
        "in": metric(replica.url, "chat_ws_frames_in_total", type="chat_message"),
        "out": metric(replica.url, "chat_ws_frames_out_total", type="chat_message"),
        "broadcast": metric(replica.url, "chat_broadcasts_total", type="chat_message"),
        "sends": metric(replica.url, "chat_layer_send_seconds_count"),
        "closed": metric(replica.url, "chat_ws_disconnects_total"),
        "errors": metric(replica.url, "chat_ws_errors_total", code="unknown_type"),
        "http_201": metric(stack.web_url, "chat_http_requests_total", method="POST", status="201"),
        "web_stored": metric(stack.web_url, "chat_messages_stored_total", kind="room"),
    }
    open_before = metric(replica.url, "chat_ws_connections")
    a = await clients.open(stack.ws_url(room, replica=2), tokens["user1"])
    b = await clients.open(stack.ws_url(room, replica=2), tokens["user2"])
    await a.say("one")
    await a.say("two")
    await a.send({"type": "no_such_thing"})
    await a.next("error")
    assert post_message(stack, room, tokens["user3"], "via the API")[0] == 201
    await b.until(lambda: len(b.messages) == 3, what="three messages")

    assert metric(replica.url, "chat_ws_connections") == open_before + 2
    assert (
        metric(replica.url, "chat_ws_connects_total", outcome="accepted") == before["accepted"] + 2
    )
    assert metric(replica.url, "chat_messages_stored_total", kind="room") == before["stored"] + 2
    assert metric(replica.url, "chat_ws_frames_in_total", type="chat_message") == before["in"] + 2
    # Three messages, each to both connections.
    assert metric(replica.url, "chat_ws_frames_out_total", type="chat_message") == before["out"] + 6
    assert metric(replica.url, "chat_broadcasts_total", type="chat_message") == (
        before["broadcast"] + 2
    )
    assert metric(replica.url, "chat_layer_send_seconds_count") > before["sends"]
    assert metric(replica.url, "chat_ws_errors_total", code="unknown_type") == before["errors"] + 1
    assert metric(replica.url, "chat_presence_entries") >= 2
    web = stack.web_url
    assert metric(web, "chat_http_requests_total", method="POST", status="201") == (
        before["http_201"] + 1
    )
    assert metric(web, "chat_messages_stored_total", kind="room") == before["web_stored"] + 1

    await a.close()
    await b.close()
    await a.until(
        lambda: metric(replica.url, "chat_ws_disconnects_total") == before["closed"] + 2,
        what="two disconnects counted",
    )
    assert metric(replica.url, "chat_ws_connections") == open_before


def test_logs_are_json_with_role_replica_and_request_id(stack, tokens):
    with urllib.request.urlopen(f"{stack.url}/chat/", timeout=5) as response:
        request_id = response.headers["X-Request-ID"]
    status, _ = http_get(f"{stack.url}/chat/no%20such%20room/")
    assert status == 404
    # The app's log lines, one JSON object each, name their process.
    logs = stack.logs()
    roles = {"web": "web", **{r.name: "ws" for r in stack.replicas}}
    for name, role in roles.items():
        lines = log_lines(logs[name])
        assert lines, name
        for line in lines:
            entry = json.loads(line)
            assert (entry["role"], entry["replica"]) == (role, name), line
    # nginx logs each request once, JSON, with the upstream and its timing, and passes
    # its request id on to the app (which echoes it).
    access = [json.loads(line) for line in log_lines(logs["nginx-access"])]
    mine = [e for e in access if e["request_id"] == request_id]
    assert len(mine) == 1, request_id
    assert mine[0]["upstream"] == f"127.0.0.1:{stack.web_port}"
    assert float(mine[0]["upstream_response_time"]) >= 0
    not_found = [json.loads(line) for line in log_lines(logs["web"])]
    assert any(
        e.get("logger") == "django.request" and e.get("status_code") == 404 and e.get("request_id")
        for e in not_found
    )
