"""Where Redis is (config/redis_urls.py): both URL forms, the settings built from the
environment, and a clear sentence for each mistake."""

from __future__ import annotations

import subprocess

import pytest

from config.redis_urls import RedisURLError, layer_host, parse, sentinel_url, split_urls

from .test_processes import manage_shell


def test_a_plain_url_is_one_server():
    server = parse("redis://:secret@cache.internal:6380/2")
    assert not server.is_sentinel
    assert server.name == "redis://cache.internal:6380/2"  # no password in metrics or logs
    assert layer_host(server, socket_timeout=15) == {
        "address": "redis://:secret@cache.internal:6380/2",
        "socket_timeout": 15,
    }


def test_the_sentinel_form_names_sentinels_master_db_and_passwords():
    server = parse("redis+sentinel://:pw@s1:26379,s2,[::1]:26380/main/3", sentinel_password="sp")
    assert server.sentinels == (("s1", 26379), ("s2", 26379), ("::1", 26380))
    assert (server.master, server.db, server.password) == ("main", 3, "pw")
    assert server.name == "redis+sentinel://s1:26379,s2:26379,::1:26380/main/3"
    host = layer_host(server, socket_timeout=15)
    assert host["master_name"] == "main" and host["sentinels"][1] == ["s2", 26379]
    assert host["password"] == "pw" and host["db"] == 3 and host["socket_timeout"] == 15
    assert host["sentinel_kwargs"]["password"] == "sp"


def test_settings_variables_make_the_same_url():
    url = sentinel_url("s1:26379, s2:26380", "main", password="p@ss", db=1)
    assert url == "redis+sentinel://:p%40ss@s1:26379,s2:26380/main/1"
    server = parse(url)
    assert server.password == "p@ss" and server.sentinels == (("s1", 26379), ("s2", 26380))


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("cache:6379", "has no scheme"),
        ("memcached://h:1", "is not one of redis, rediss, unix"),
        ("redis+sentinel:///main", "names no sentinel"),
        ("redis+sentinel://s1:26379", "names no master"),
        ("redis+sentinel://s1:port/main", "is not host:port"),
        ("redis+sentinel://s1/main/x", "is not a number"),
    ],
)
def test_a_wrong_url_says_what_is_wrong(url, says):
    with pytest.raises(RedisURLError, match=says):
        parse(url)


def _settings(**env: str) -> subprocess.CompletedProcess:
    code = (
        "from django.conf import settings as s; "
        "print(s.REDIS_URL); print(s.CHANNEL_LAYERS['default']['CONFIG']['hosts'])"
    )
    return manage_shell(code, **env)


def test_sentinel_variables_configure_every_redis_user():
    done = _settings(REDIS_SENTINELS="s1:26379,s2:26379", REDIS_SENTINEL_MASTER="main")
    assert done.returncode == 0, done.stderr
    url, hosts = done.stdout.strip().splitlines()[-2:]
    assert url == "redis+sentinel://s1:26379,s2:26379/main/0"
    assert "'master_name': 'main'" in hosts


def test_the_cache_gets_the_whole_sentinel_url():
    """Django splits a LOCATION string at commas; the sentinel list must stay whole."""
    code = "from django.core.cache import caches; print(caches['default']._servers)"
    done = manage_shell(code, REDIS_SENTINELS="s1:26379,s2:26379", REDIS_SENTINEL_MASTER="main")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "['redis+sentinel://s1:26379,s2:26379/main/0']"


def test_a_list_of_urls_keeps_sentinel_urls_whole():
    text = "redis+sentinel://a:26379,b:26379/m1/0, redis://x:6379/0,redis+sentinel://c/m2"
    assert split_urls(text) == [
        "redis+sentinel://a:26379,b:26379/m1/0",
        "redis://x:6379/0",
        "redis+sentinel://c/m2",
    ]


def test_layer_urls_with_sentinels_make_one_host_per_shard():
    done = _settings(
        REDIS_URL="redis://a:1/0",
        REDIS_LAYER_URLS="redis+sentinel://s1:26379,s2:26379/m1/0,redis+sentinel://s3:26379/m2/0",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("'master_name'") == 2


def test_layer_urls_make_one_host_per_shard():
    done = _settings(REDIS_URL="redis://a:1/0", REDIS_LAYER_URLS="redis://a:1/0,redis://b:2/0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("'address'") == 2


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            {"REDIS_URL": "redis://a:1/0", "REDIS_SENTINELS": "s:26379"},
            "REDIS_URL and REDIS_SENTINELS are both set",
        ),
        ({"REDIS_SENTINELS": "s:26379"}, "REDIS_SENTINEL_MASTER is not"),
        ({"REDIS_LAYER_URLS": "redis://a:1/0"}, "REDIS_URL is not"),
        ({"REDIS_URL": "redis+sentinel://s:26379"}, "names no master"),
    ],
)
def test_a_wrong_redis_setting_stops_start_up_with_one_sentence(env, says):
    done = _settings(**env)
    assert done.returncode != 0
    assert says in done.stderr
