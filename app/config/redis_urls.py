"""Where Redis is: one URL form for one server and for a Sentinel-watched master.

Every Redis user (both channel layers, presence, rate limits, abuse limits, Django's
cache, /readyz) is configured from URLs parsed here, so that a Sentinel deployment is a
settings change, not a code path per user. The forms:

- `redis://[[user]:password@]host:port[/db]`, `rediss://…`, `unix://…`: one server;
- `redis+sentinel://[[user]:password@]host:port[,host:port…]/<master>[/<db>]`: the
  master Sentinel names `<master>`, found by asking the listed sentinels (the password
  is the master's; the sentinels' own comes from REDIS_SENTINEL_PASSWORD).

Plain Python: the settings import it before any app is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379


class RedisURLError(ValueError):
    """A Redis URL that cannot be used; the message says which part is wrong."""


@dataclass(frozen=True)
class RedisServer:
    """One logical Redis: a plain server, or a master found through Sentinel."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)

    @property
    def is_sentinel(self) -> bool:
        return bool(self.sentinels)

    @property
    def name(self) -> str:
        """How logs and metrics name it: no password, and stable across failovers."""
        if self.is_sentinel:
            hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"{SENTINEL_SCHEME}://{hosts}/{self.master}/{self.db}"
        parts = urlsplit(self.url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return parts._replace(netloc=netloc, query="", fragment="").geturl()

    def master_kwargs(self) -> dict:
        """What a Sentinel-managed pool passes to each connection to the master."""
        kwargs: dict = {"db": self.db}
        if self.username:
            kwargs["username"] = self.username
        if self.password:
            kwargs["password"] = self.password
        return kwargs

    def sentinel_kwargs(self) -> dict:
        """What a connection to a sentinel needs (timeouts short: a dead sentinel is
        skipped for the next one)."""
        kwargs: dict = {"socket_timeout": 2, "socket_connect_timeout": 2}
        if self.sentinel_password:
            kwargs["password"] = self.sentinel_password
        return kwargs


def _host_port(text: str, where: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = text.strip(), str(DEFAULT_SENTINEL_PORT)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RedisURLError(f"{where}: {text!r} is not host:port.")
    return host, int(port)


def parse(url: str, sentinel_password: str | None = None) -> RedisServer:
    """A RedisServer from one URL (either form); RedisURLError says what is wrong."""
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise RedisURLError(
            f"Redis URL {url!r} has no scheme (redis://, rediss://, unix://, {SENTINEL_SCHEME}://)."
        )
    if scheme in ("redis", "rediss", "unix"):
        return RedisServer(url=url)
    if scheme != SENTINEL_SCHEME:
        raise RedisURLError(
            f"Redis URL scheme {scheme!r} is not one of redis, rediss, unix, {SENTINEL_SCHEME}."
        )
    credentials, _, location = rest.rpartition("@")
    username = password = None
    if credentials:
        user, _, secret = credentials.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    hosts, _, path = location.partition("/")
    path = path.split("?", 1)[0].strip("/")
    if not hosts:
        raise RedisURLError(f"{SENTINEL_SCHEME} URL names no sentinel (host:port,…).")
    sentinels = tuple(_host_port(h, "sentinel") for h in hosts.split(",") if h.strip())
    master, _, db = path.partition("/")
    if not master:
        raise RedisURLError(
            f"{SENTINEL_SCHEME} URL names no master: {SENTINEL_SCHEME}://host:port,…/<master>[/<db>]."
        )
    if db and not db.isdigit():
        raise RedisURLError(f"{SENTINEL_SCHEME} URL: database {db!r} is not a number.")
    return RedisServer(
        url=url,
        sentinels=sentinels,
        master=unquote(master),
        db=int(db or 0),
        username=username,
        password=password,
        sentinel_password=sentinel_password or None,
    )


def split_urls(text: str) -> list[str]:
    """A comma-separated list of Redis URLs (REDIS_LAYER_URLS), where a redis+sentinel URL
    has commas of its own: a piece without a scheme continues the URL before it."""
    urls: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if "://" in piece or not urls:
            urls.append(piece)
        else:
            urls[-1] += "," + piece
    return urls


def sentinel_url(
    sentinels: str, master: str, password: str = "", db: int = 0, username: str = ""
) -> str:
    """The redis+sentinel URL for REDIS_SENTINELS / REDIS_SENTINEL_MASTER / … settings."""
    hosts = [_host_port(h, "REDIS_SENTINELS") for h in sentinels.split(",") if h.strip()]
    if not hosts:
        raise RedisURLError("REDIS_SENTINELS names no sentinel: give host:port,host:port,….")
    if not master:
        raise RedisURLError("REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER is not.")
    auth = ""
    if username or password:
        auth = f"{quote(username, safe='')}:{quote(password, safe='')}@"
    netloc = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in hosts)
    return f"{SENTINEL_SCHEME}://{auth}{netloc}/{quote(master, safe='')}/{int(db)}"


def layer_host(server: RedisServer, **options) -> dict:
    """channels_redis's `hosts` entry for the server (its create_pool reads both forms)."""
    if not server.is_sentinel:
        return {"address": server.url, **options}
    return {
        "sentinels": [list(pair) for pair in server.sentinels],
        "master_name": server.master,
        "sentinel_kwargs": server.sentinel_kwargs(),
        **server.master_kwargs(),
        **options,
    }
