"""Abuse limits (chat/services/abuse.py, accounts/throttle.py) on the real Redis.

Keys in Redis outlive a test (failed-login counts last CHAT_LOGIN_LOCKOUT), so every test
uses its own usernames, user ids and client addresses.
"""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from prometheus_client import REGISTRY

from chat import redis_client
from chat.services import abuse


def refusals(limit: str) -> float:
    return REGISTRY.get_sample_value("chat_abuse_refusals_total", {"limit": limit}) or 0.0


def skipped(limit: str) -> float:
    return REGISTRY.get_sample_value("chat_abuse_checks_skipped_total", {"limit": limit}) or 0.0


def an_address() -> str:
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


def a_user_id() -> int:
    return random.randrange(10**9, 10**10)


def a_name(prefix: str = "u") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


# A Redis that is not there: a port nothing listens on.
DEAD_REDIS = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:9/0",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
}


@pytest.fixture
async def fresh_loop_state():
    yield
    await redis_client.close_redis()


@pytest.fixture(params=["redis", "memory"])
def backend(request, settings):
    if request.param == "memory":
        settings.REDIS_URL = ""
    return request.param


# --- Concurrent WebSockets -------------------------------------------------------------


async def test_sockets_per_user_are_capped_and_released(backend, settings, fresh_loop_state):
    settings.CHAT_WS_PER_USER = 2
    user = a_user_id()
    before = refusals("ws_user")
    await abuse.admit_socket(user, an_address(), "c1")
    await abuse.admit_socket(user, an_address(), "c2")
    await abuse.admit_socket(user, an_address(), "c2")  # the same socket again: no new slot
    with pytest.raises(abuse.Refused) as refused:
        await abuse.admit_socket(user, an_address(), "c3")
    assert refused.value.code == "rate_limited" and refused.value.limit == "ws_user"
    assert refused.value.status == 429
    assert "at most 2 at once" in refused.value.message
    frame = refused.value.as_frame()
    assert frame["code"] == "rate_limited" and frame["limit"] == "ws_user", frame
    assert refusals("ws_user") == before + 1
    assert await abuse.open_sockets(user_id=user) == 2
    # Another user is not affected.
    await abuse.admit_socket(a_user_id(), an_address(), "c4")

    await abuse.release_socket("c1")
    await abuse.release_socket("c1")  # twice is harmless
    await abuse.admit_socket(user, an_address(), "c3")
    assert await abuse.open_sockets(user_id=user) == 2
    for conn in ("c2", "c3", "c4"):
        await abuse.release_socket(conn)
    assert await abuse.open_sockets(user_id=user) == 0
    assert abuse.keeper().held == {}


async def test_sockets_per_address_count_anonymous_and_logged_in(
    backend, settings, fresh_loop_state
):
    settings.CHAT_WS_PER_ADDRESS = 3
    address = an_address()
    await abuse.admit_socket(None, address, "a1")
    await abuse.admit_socket(None, address, "a2")
    await abuse.admit_socket(a_user_id(), address, "a3")
    before = refusals("ws_address")
    for user in (None, a_user_id()):
        with pytest.raises(abuse.Refused) as refused:
            await abuse.admit_socket(user, address, "a4")
        assert refused.value.limit == "ws_address"
        assert "network address" in refused.value.message
    assert refusals("ws_address") == before + 2
    # A refused user took no slot of its own.
    assert await abuse.open_sockets(address=address) == 3
    await abuse.admit_socket(None, an_address(), "b1")  # another address is fine
    for conn in ("a1", "a2", "a3", "b1"):
        await abuse.release_socket(conn)
    await abuse.admit_socket(None, address, "a4")
    await abuse.release_socket("a4")


async def test_an_ipv6_subscriber_network_is_one_address(settings, fresh_loop_state):
    settings.CHAT_WS_PER_ADDRESS = 2
    net = f"2001:db8:{random.randrange(65536):x}:{random.randrange(65536):x}"
    await abuse.admit_socket(None, f"{net}::1", "v1")
    await abuse.admit_socket(None, f"{net}:ffff::2", "v2")
    with pytest.raises(abuse.Refused):
        await abuse.admit_socket(None, f"{net}::abcd", "v3")
    for conn in ("v1", "v2"):
        await abuse.release_socket(conn)
    assert abuse.client_key("::ffff:10.1.2.3") == "10.1.2.3"
    assert abuse.client_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"


async def test_limits_off_and_no_address_touch_nothing(settings, fresh_loop_state):
    settings.CHAT_WS_PER_USER = 0
    settings.CHAT_WS_PER_ADDRESS = 5
    user = a_user_id()
    for n in range(8):  # no per-user limit, and no address (e.g. a unix socket)
        await abuse.admit_socket(user, None, f"n{n}")
    assert await abuse.open_sockets(user_id=user) == 0
    assert abuse.keeper().held == {}
    assert abuse.scope_address({"client": ["198.51.100.7", 4000]}) == "198.51.100.7"
    assert abuse.scope_address({"client": None}) == ""


def _in_another_process(user: int, address: str, conns: list[str]) -> list[str]:
    """Admit sockets on another event loop and Redis client, as another replica would;
    the loop then ends without releasing them, as a killed process would."""

    async def run() -> list[str]:
        refused = []
        try:
            for conn in conns:
                try:
                    await abuse.admit_socket(user, address, conn)
                except abuse.Refused as exc:
                    refused.append(exc.limit)
        finally:
            await redis_client.close_redis()
        return refused

    return asyncio.run(run())


async def test_slots_are_shared_by_replicas_and_a_dead_ones_expire(settings, fresh_loop_state):
    settings.CHAT_PRESENCE_TTL = 1.0
    settings.CHAT_WS_PER_USER = 3
    settings.CHAT_WS_PER_ADDRESS = 100
    user, address = a_user_id(), an_address()
    await abuse.admit_socket(user, address, "here-1")
    # "Another replica" fills the user's remaining slots, then dies without a disconnect.
    refused = await asyncio.to_thread(_in_another_process, user, address, ["far-1", "far-2"])
    assert refused == []
    with pytest.raises(abuse.Refused):
        await abuse.admit_socket(user, address, "here-2")
    assert await abuse.open_sockets(user_id=user) == 3
    # Nobody refreshes the dead replica's slots: they go within the TTL. This process's
    # own slot is kept alive by its heartbeat well past the TTL.
    await asyncio.sleep(2.5)
    assert await abuse.open_sockets(user_id=user) == 1
    assert await abuse.open_sockets(address=address) == 1
    await abuse.admit_socket(user, address, "here-2")
    key = abuse.user_slots_key(user)
    assert 0 < await redis_client.get_redis().ttl(key) <= 4, "the set itself expires too"
    for conn in ("here-1", "here-2"):
        await abuse.release_socket(conn)
    assert await abuse.open_sockets(user_id=user) == 0


async def test_memory_slots_expire_without_heartbeat(settings, fresh_loop_state):
    settings.REDIS_URL = ""
    settings.CHAT_PRESENCE_TTL = 0.5
    settings.CHAT_WS_PER_USER = 1
    user = a_user_id()
    await abuse.admit_socket(user, None, "m1")
    abuse.keeper().discard("m1")  # as if its consumer vanished without a disconnect
    with pytest.raises(abuse.Refused):
        await abuse.admit_socket(user, None, "m2")
    await asyncio.sleep(0.7)
    await abuse.admit_socket(user, None, "m2")
    await abuse.release_socket("m2")


async def test_a_redis_failure_refuses_the_socket_loudly(settings, fresh_loop_state):
    settings.REDIS_URL = "redis://127.0.0.1:9/0"
    from redis.exceptions import RedisError

    with pytest.raises(RedisError):
        await abuse.admit_socket(a_user_id(), an_address(), "x1")
    assert abuse.keeper().held == {}


# --- Room creation per user per hour --------------------------------------------------


def test_room_creation_per_user_per_hour(settings, make_user):
    settings.CHAT_ROOMS_PER_USER_PER_HOUR = 2
    alice, bob = make_user(a_name("alice")), make_user(a_name("bob"))
    abuse.allow_room_creation(alice)
    abuse.allow_room_creation(alice)
    before = refusals("room_creation")
    for _ in range(2):  # refused attempts do not count, nor do they lift the limit
        with pytest.raises(abuse.Refused) as refused:
            abuse.allow_room_creation(alice)
    assert refused.value.limit == "room_creation" and refused.value.code == "rate_limited"
    assert 1 <= refused.value.retry_after <= 3600
    assert "at most 2 an hour" in refused.value.message
    assert refusals("room_creation") == before + 2
    abuse.allow_room_creation(bob)
    staff = make_user(a_name("staff"), staff=True)
    for _ in range(5):
        abuse.allow_room_creation(staff)
    settings.CHAT_ROOMS_PER_USER_PER_HOUR = 0
    abuse.allow_room_creation(alice)


def test_room_creation_is_counted_in_redis(settings, make_user):
    import redis

    settings.CHAT_ROOMS_PER_USER_PER_HOUR = 2
    alice = make_user(a_name("alice"))
    abuse.allow_room_creation(alice)
    abuse.allow_room_creation(alice)
    with pytest.raises(abuse.Refused):
        abuse.allow_room_creation(alice)  # refused, so not counted
    raw = redis.Redis.from_url(settings.REDIS_URL)
    try:
        keys = raw.keys(f"chat:cache:*abuse:room_creation:{alice.pk}:*")
        assert len(keys) == 1 and int(raw.get(keys[0])) == 2, keys
        assert 0 < raw.ttl(keys[0]) <= 3600 + 60
    finally:
        raw.close()


def test_room_creation_lets_through_when_redis_is_down(settings, make_user):
    settings.CACHES = DEAD_REDIS
    settings.CHAT_ROOMS_PER_USER_PER_HOUR = 1
    alice = make_user(a_name("alice"))
    before = skipped("room_creation")
    for _ in range(3):
        abuse.allow_room_creation(alice)
    assert skipped("room_creation") == before + 3


# --- Signups per address --------------------------------------------------------------


def signup(client: Client, address: str, username: str, *, valid: bool = True, **extra):
    password = "a-long-pass-phrase-42"
    return client.post(
        "/accounts/signup/",
        {
            "username": username,
            "password1": password,
            "password2": password if valid else "something else",
        },
        REMOTE_ADDR=address,
        **extra,
    )


@pytest.mark.django_db
def test_signups_per_address_per_hour(settings):
    settings.CHAT_SIGNUPS_PER_ADDRESS_PER_HOUR = 2
    address = an_address()
    assert signup(Client(), address, a_name(), valid=False).status_code == 200  # not counted
    assert signup(Client(), address, a_name()).status_code == 302
    assert signup(Client(), address, a_name()).status_code == 302
    before = refusals("signup_address")
    name = a_name()
    response = signup(Client(), address, name)
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 3600
    page = response.content.decode()
    assert "Too many new accounts from your network address" in page
    assert "form-errors" in page and name in page  # on the form, what was typed kept
    assert not get_user_model().objects.filter(username=name).exists()
    assert refusals("signup_address") == before + 1
    assert signup(Client(), an_address(), name).status_code == 302


@pytest.mark.django_db
def test_signup_address_comes_from_nginx_only_when_trusted(settings):
    settings.CHAT_SIGNUPS_PER_ADDRESS_PER_HOUR = 1
    nginx = an_address()
    settings.TRUST_PROXY_HEADERS = False
    # Untrusted: the header is the client's own say, so every request is nginx's address.
    assert signup(Client(), nginx, a_name(), HTTP_X_REAL_IP=an_address()).status_code == 302
    assert signup(Client(), nginx, a_name(), HTTP_X_REAL_IP=an_address()).status_code == 429
    settings.TRUST_PROXY_HEADERS = True
    client_a, client_b = an_address(), an_address()
    assert signup(Client(), nginx, a_name(), HTTP_X_REAL_IP=client_a).status_code == 302
    assert signup(Client(), nginx, a_name(), HTTP_X_FORWARDED_FOR=client_b).status_code == 302
    assert signup(Client(), nginx, a_name(), HTTP_X_REAL_IP=client_a).status_code == 429


@pytest.mark.django_db
def test_signups_go_on_when_redis_is_down(settings):
    settings.CACHES = DEAD_REDIS
    settings.CHAT_SIGNUPS_PER_ADDRESS_PER_HOUR = 1
    address = an_address()
    before = skipped("signup_address")
    assert signup(Client(), address, a_name()).status_code == 302
    assert signup(Client(), address, a_name()).status_code == 302
    assert skipped("signup_address") == before + 2


# --- Logins per username and per address (django-axes) ----------------------------------

PASSWORD = "a-long-pass-phrase"


def login(address: str, username: str, password: str, path: str = "/accounts/login/", **extra):
    return Client().post(
        path, {"username": username, "password": password}, REMOTE_ADDR=address, **extra
    )


@pytest.mark.django_db
def test_failed_logins_lock_the_username_everywhere(settings, make_user):
    limit = settings.CHAT_LOGIN_FAILURE_LIMIT
    assert limit == 10 and settings.CHAT_LOGIN_LOCKOUT == 900  # the documented defaults
    name = a_name("alice")
    make_user(name, password=PASSWORD)
    before = refusals("login_username")
    for n in range(limit - 1):  # each from another address: the username is what counts
        response = login(an_address(), name, "wrong")
        assert response.status_code == 200, n
        assert "correct username and password" in response.content.decode()
    response = login(an_address(), name, "wrong")
    assert response.status_code == 429
    assert response["Retry-After"] == "900"
    page = response.content.decode()
    assert "Too many failed logins for this username" in page
    assert "form-errors" in page and "correct username and password" not in page
    # Locked: even the right password is refused, from anywhere, without being checked.
    response = login(an_address(), name, PASSWORD)
    assert response.status_code == 429
    assert "_auth_user_id" not in response.client.session
    assert refusals("login_username") == before + 2
    # Other users log in as usual.
    other = a_name("bob")
    make_user(other, password=PASSWORD)
    assert login(an_address(), other, PASSWORD).status_code == 302


@pytest.mark.django_db
def test_an_operator_lifts_a_lockout(settings, make_user):
    from io import StringIO

    from django.core.management import call_command

    settings.AXES_FAILURE_LIMIT = 2
    name, address = a_name("hank"), an_address()
    make_user(name, password=PASSWORD)
    login(an_address(), name, "wrong")
    login(address, a_name(), "wrong")
    assert login(address, a_name(), "wrong").status_code == 429
    assert login(an_address(), name, "wrong").status_code == 429
    call_command("axes_reset_username", name, stdout=StringIO())
    assert login(an_address(), name, PASSWORD).status_code == 302
    assert login(address, name, PASSWORD).status_code == 429
    call_command("axes_reset_ip", address, stdout=StringIO())
    assert login(address, name, PASSWORD).status_code == 302


@pytest.mark.django_db
def test_failed_logins_lock_the_address_for_every_username(settings, make_user):
    limit = settings.CHAT_LOGIN_FAILURE_LIMIT
    address = an_address()
    for _ in range(limit - 1):  # a different username each time: spraying
        assert login(address, a_name(), "wrong").status_code == 200
    before = refusals("login_address")
    response = login(address, a_name(), "wrong")
    assert response.status_code == 429
    assert "Too many failed logins for your network address" in response.content.decode()
    name = a_name("carol")
    make_user(name, password=PASSWORD)
    assert login(address, name, PASSWORD).status_code == 429
    assert refusals("login_address") == before + 2
    assert login(an_address(), name, PASSWORD).status_code == 302


@pytest.mark.django_db(transaction=True)
async def test_the_lockout_answers_the_same_under_asgi(settings, make_user):
    """`make run` serves pages from daphne: the same 429 and form through ASGI."""
    from channels.db import database_sync_to_async
    from django.db import connections
    from django.test import AsyncClient

    settings.TRUST_PROXY_HEADERS = True  # the ASGI test client's peer is always 127.0.0.1
    name = a_name("gina")
    await database_sync_to_async(make_user)(name, password=PASSWORD)
    try:
        for _ in range(settings.CHAT_LOGIN_FAILURE_LIMIT):
            response = await AsyncClient().post(
                "/accounts/login/",
                {"username": name, "password": "wrong"},
                headers={"X-Real-IP": an_address()},
            )
    finally:
        await database_sync_to_async(connections.close_all)()
    assert response.status_code == 429 and response["Retry-After"] == "900"
    assert "Too many failed logins for this username" in response.content.decode()
    assert "form-errors" in response.content.decode()


@pytest.mark.django_db
def test_the_admin_login_is_throttled_too(settings):
    name = a_name("root")
    get_user_model().objects.create_superuser(name, password=PASSWORD)
    for _ in range(settings.CHAT_LOGIN_FAILURE_LIMIT - 1):
        assert login(an_address(), name, "wrong", "/admin/login/").status_code == 200
    response = login(an_address(), name, "wrong", "/admin/login/")
    assert response.status_code == 429 and response["Retry-After"] == "900"
    assert "Too many failed logins for this username" in response.content.decode()
    assert login(an_address(), name, PASSWORD, "/admin/login/").status_code == 429


@pytest.mark.django_db
def test_login_address_comes_from_nginx_only_when_trusted(settings, make_user):
    settings.AXES_FAILURE_LIMIT = 3
    nginx = an_address()
    settings.TRUST_PROXY_HEADERS = True
    clients = [an_address() for _ in range(3)]
    for _ in range(2):  # three clients behind nginx, each below the limit
        for client in clients:
            assert login(nginx, a_name(), "wrong", HTTP_X_REAL_IP=client).status_code == 200
    name = a_name("dave")
    make_user(name, password=PASSWORD)
    assert login(nginx, name, PASSWORD, HTTP_X_REAL_IP=clients[0]).status_code == 302
    assert login(nginx, a_name(), "wrong", HTTP_X_REAL_IP=clients[0]).status_code == 429
    settings.TRUST_PROXY_HEADERS = False
    for _ in range(2):  # untrusted headers are ignored: all of this is nginx's address
        assert login(nginx, a_name(), "wrong", HTTP_X_REAL_IP=an_address()).status_code == 200
    assert login(nginx, a_name(), "wrong", HTTP_X_REAL_IP=an_address()).status_code == 429
    assert login(nginx, name, PASSWORD, HTTP_X_REAL_IP=an_address()).status_code == 429


@pytest.mark.django_db
def test_logins_go_on_when_redis_is_down(settings, make_user):
    settings.CACHES = DEAD_REDIS
    name = a_name("erin")
    make_user(name, password=PASSWORD)
    address = an_address()
    before = skipped("login")
    for _ in range(settings.CHAT_LOGIN_FAILURE_LIMIT + 2):
        assert login(address, name, "wrong").status_code == 200
    assert login(address, name, PASSWORD).status_code == 302
    assert skipped("login") > before


@pytest.mark.django_db
def test_logins_without_a_request_are_not_throttled(make_user):
    name = a_name("frank")
    make_user(name, password=PASSWORD)
    assert not Client().login(username=name, password="wrong")
    assert Client().login(username=name, password=PASSWORD)


# --- make stack raises the per-address limits -------------------------------------------


def test_make_stack_raises_the_per_address_limits(monkeypatch, settings):
    from types import SimpleNamespace

    from localstack.stack import STACK_LIMITS, Stack

    for name in STACK_LIMITS:
        monkeypatch.delenv(name, raising=False)
    stack = Stack(replicas=1, env={"CHAT_ROOMS_PER_USER_PER_HOUR": "7"})
    stack.postgres = SimpleNamespace(url="postgres://x")
    stack.redis = SimpleNamespace(url="redis://x")
    env = stack._app_env()
    # Thousands of load-test sockets from 127.0.0.1; production stays tight.
    assert int(env["CHAT_WS_PER_ADDRESS"]) >= 10_000 > 100 >= settings.CHAT_WS_PER_ADDRESS
    assert int(env["CHAT_SIGNUPS_PER_ADDRESS_PER_HOUR"]) >= 1000
    assert env["CHAT_ROOMS_PER_USER_PER_HOUR"] == "7"  # env= wins
    monkeypatch.setenv("CHAT_WS_PER_ADDRESS", "123")  # so does the caller's environment
    assert "CHAT_WS_PER_ADDRESS" not in stack._app_env()
    stack.root.rmdir()


async def test_slot_keeper_counts_what_it_holds_without_summing_all():
    keeper = abuse.SlotKeeper()
    keeper.add("c1", ["user:1", "addr:a"])
    keeper.add("c2", ["addr:a"])
    keeper.add("c1", ["user:1"])  # the same connection again: replaced, not added
    assert keeper.slots == 2
    assert REGISTRY.get_sample_value("chat_abuse_socket_slots") == 2
    assert keeper.discard("c2") == ["addr:a"] and keeper.discard("nope") is None
    assert keeper.slots == 1 == REGISTRY.get_sample_value("chat_abuse_socket_slots")
    keeper.discard("c1")
    assert keeper.slots == 0
    keeper._task.cancel()
