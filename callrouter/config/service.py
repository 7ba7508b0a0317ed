"""The service's own settings (config.yaml): where to listen, limits, timeouts, paths, the store."""

from __future__ import annotations

import re
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Literal

from pydantic import Field, PlainSerializer, PlainValidator, field_validator

from callrouter.config.notify import Notify, check_headers
from callrouter.config.package import Packages
from callrouter.config.plan import Blacklist
from callrouter.config.types import Frozen
from callrouter.config.types import TimeZoneName


IpNetwork = IPv4Network | IPv6Network


def _network(value: object) -> IpNetwork:
    """An address (a /32 or /128) or a CIDR network; host bits set are refused as the likely typo they are."""
    if isinstance(value, (IPv4Network, IPv6Network)):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an IP address or network (write it as text, e.g. \"10.0.0.5\" or \"10.0.0.0/24\")")
    try:
        return ip_network(value.strip())
    except ValueError:
        pass
    try:
        loose = ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/24, 2001:db8::/64)") from None
    raise ValueError(f"{value!r} has host bits set; the network is {loose}")


AllowedNetwork = Annotated[IpNetwork, PlainValidator(_network), PlainSerializer(str)]


class Listen(Frozen):
    host: str = "127.0.0.1"
    port: int = Field(default=4573, ge=0, le=65535)
    # Who may connect: the Asterisk servers' addresses or networks. Anyone else is closed on before a byte
    # is read or sent: FastAGI carries the agents' numbers and takes CDRs, so it is never open to the world.
    allow: tuple[AllowedNetwork, ...] = (ip_network("127.0.0.0/8"), ip_network("::1"))

    @field_validator("allow")
    @classmethod
    def _not_empty(cls, value: tuple[IpNetwork, ...]) -> tuple[IpNetwork, ...]:
        if not value:
            raise ValueError("list the Asterisk servers' addresses; an empty list would refuse every call")
        return value


class Timeouts(Frozen):
    """Seconds. A silent or stuck peer must never hold a session slot forever."""

    environment: float = Field(default=5.0, gt=0, le=120)  # to receive the agi_* block
    command: float = Field(default=30.0, gt=0, le=600)  # for an ordinary command's reply
    max_call: float = Field(default=4 * 3600.0, gt=0, le=48 * 3600.0)  # an answered call's whole length
    drain: float = Field(default=30.0, ge=0, le=3600)  # SIGTERM: how long calls in progress may finish


class Dialing(Frozen):
    """How a line's `number` becomes a Dial target (through the dialplan context in asterisk/)."""

    template: str = "Local/{number}@callrouter-lines"
    # Dial b()/U() hooks that stamp Asterisk's clock when a line is called and when it answers, so ring
    # and talk time are the line's own (contexts callrouter-dialing and callrouter-answered in
    # asterisk/extensions.conf). Off only for a dialplan without them: talk time then includes ringing.
    timing_hooks: bool = True

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        if value.count("{number}") != 1:
            raise ValueError("template must contain {number} exactly once")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{1,15}/[A-Za-z0-9_\-.@:+/]*\{number\}[A-Za-z0-9_\-.@:+/]*", value):
            raise ValueError("template must look like TECH/{number}@context, with no , & ( ) $ or spaces")
        return value


class Store(Frozen):
    """The database: CDRs, statistics, shared routing state, runtime blacklist."""

    # postgresql+asyncpg://user:pass@host/db; none means an SQLite file, var/callrouter.db. The environment
    # variable CALLROUTER_DATABASE_URL overrides it (keeps passwords out of the file).
    url: str | None = None
    # shared: in the database, for several routers; local: per process; auto: shared on Postgres, local on
    # SQLite (an SQLite file serves one host, where one router process is the usual set-up).
    routing_state: Literal["auto", "shared", "local"] = "auto"
    timeout: float = Field(default=0.5, ge=0.01, le=10)  # a routing-state query slower than this falls back to memory
    lease_ttl: float = Field(default=30.0, ge=3, le=600)  # a stopped router's line counts expire after this
    blacklist_refresh: float = Field(default=5.0, ge=0.5, le=300)  # seconds between reads of runtime blacklist entries

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        """Caught by `callrouter check`, not at the first call."""
        if value is None:
            return None
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in ("postgresql", "postgres", "postgresql+asyncpg", "sqlite", "sqlite+aiosqlite"):
            raise ValueError("must be postgresql+asyncpg://user:password@host:port/database (or sqlite+aiosqlite:///path)")
        return value


class Cdr(Frozen):
    """The CDR writer: a local spool on disk, written to the database in batches."""

    spool_dir: str = "var/cdr-spool"
    batch_size: int = Field(default=1000, ge=1, le=10_000)
    batch_age: float = Field(default=0.5, ge=0.0, le=60)  # seconds a record may wait for a fuller batch
    memory_records: int = Field(default=20_000, ge=0, le=1_000_000)  # parsed records kept in RAM; the rest are re-read
    segment_bytes: int = Field(default=8 << 20, ge=4096, le=1 << 30)
    fsync: bool = True  # off only for tests and benchmarks: a power cut could then lose the newest records
    close_timeout: float = Field(default=10.0, ge=0, le=600)  # on stop, time to write the backlog before leaving it spooled


class Admin(Frozen):
    """The admin HTTP API (aiohttp) inside `serve`: health, /metrics, calls, recordings, blacklist, statistics, reload."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # Bearer token for every /api route. CALLROUTER_ADMIN_TOKEN overrides it (keeps it out of the file).
    # With none, the API only starts on a loopback address.
    token: str | None = Field(default=None, min_length=16, max_length=256, pattern=r"^[\x21-\x7e]+$")
    page_size: int = Field(default=100, ge=1, le=1000)  # calls per page when the request names none
    max_page_size: int = Field(default=1000, ge=1, le=10_000)
    export_max_rows: int = Field(default=1_000_000, ge=1, le=50_000_000)  # rows one CSV export may hold


class Console(Frozen):
    """The web console (管理后台) at /console/ on the admin API's port: sessions, login limits, proxies."""

    enabled: bool = True
    idle_timeout: float = Field(default=1800.0, ge=60, le=86_400)  # seconds without a request before a session ends
    session_lifetime: float = Field(default=12 * 3600.0, ge=300, le=30 * 86_400)  # absolute, from login
    login_window: float = Field(default=900.0, ge=60, le=86_400)  # failed logins are counted over this many seconds
    login_failures_per_user: int = Field(default=5, ge=1, le=1000)  # within the window, then 429 for that username
    login_failures_per_address: int = Field(default=20, ge=1, le=100_000)  # within the window, then 429 for that address
    # Reverse proxies whose X-Forwarded-Proto / X-Forwarded-For are believed (TLS ends there).
    trusted_proxies: tuple[AllowedNetwork, ...] = ()
    # The console's public origin (e.g. https://400.example.com) when the proxy does not pass the Host on;
    # unsafe requests must come from it. None: the request's own scheme and Host.
    origin: str | None = Field(default=None, pattern=r"^https?://[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?$")


class Exporter(Frozen):
    """Metrics derived from the CDRs in the database, for every router's calls."""

    in_serve: bool = False  # also follow the CDRs inside `serve` (then its /metrics carries them too)
    host: str = "127.0.0.1"  # where `callrouter exporter` serves /metrics
    port: int = Field(default=9464, ge=0, le=65535)
    poll_interval: float = Field(default=1.0, ge=0.05, le=60)  # seconds between reads of new CDR rows
    # Seconds a missing row id is still looked for: a transaction that took an id may commit after a later one.
    gap_horizon: float = Field(default=300.0, ge=1, le=86_400)
    batch_rows: int = Field(default=5000, ge=100, le=100_000)  # rows read per query while catching up


class Crm(Frozen):
    """Caller names from the company's CRM (来电显示 + CRM), asked at the start of each call."""

    # None: off. http(s) URL with {caller} (the caller's normalised digits) and optionally {number}
    # (the 400 number), URL-encoded when filled in. The CRM answers 200 with a JSON object, 404 for unknown.
    url: str | None = Field(default=None, pattern=r"^https?://[^\s]{1,2000}$")
    headers: dict[str, str] = Field(default_factory=dict)  # values may name environment variables: ${CRM_TOKEN}
    timeout: float = Field(default=0.3, gt=0, le=5)  # the budget a call waits for the name; then it goes on without
    request_timeout: float = Field(default=3.0, gt=0, le=30)  # a late answer still fills the cache until this
    cache_ttl: float = Field(default=600.0, ge=0, le=86_400)
    negative_ttl: float = Field(default=60.0, ge=0, le=86_400)  # "not known" is remembered this long
    cache_size: int = Field(default=50_000, ge=1, le=10_000_000)
    name_field: str = Field(default="name", pattern=r"^[A-Za-z0-9_.]{1,64}$")  # JSON field (dotted path) with the name
    tags_field: str = Field(default="tags", pattern=r"^[A-Za-z0-9_.]{1,64}$")  # JSON field with a list of tags
    max_concurrency: int = Field(default=50, ge=1, le=10_000)  # open requests at most; beyond, calls go on without

    @field_validator("url")
    @classmethod
    def _placeholders(cls, value: str | None) -> str | None:
        if value is not None and "{caller}" not in value:
            raise ValueError("the URL must contain {caller}")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        return check_headers(value)


class Ami(Frozen):
    """The Asterisk Manager Interface, for `callrouter test-call` (asterisk/manager.conf has the user)."""

    host: str = Field(default="127.0.0.1", pattern=r"^[A-Za-z0-9.\-:]{1,253}$")
    port: int = Field(default=5038, ge=1, le=65535)
    username: str = Field(default="callrouter", pattern=r"^[A-Za-z0-9_\-.]{1,64}$")
    secret: str | None = Field(default=None, max_length=256)  # CALLROUTER_AMI_SECRET overrides it; never logged
    inbound_context: str = Field(default="from-pstn-400", pattern=r"^[A-Za-z0-9_\-]{1,79}$")  # where carrier calls arrive
    test_caller: str = Field(default="13800000000", pattern=r"^\+?[0-9]{3,20}$")  # the caller ID of a test call
    connect_timeout: float = Field(default=5.0, gt=0, le=60)
    call_timeout: float = Field(default=120.0, gt=0, le=600)  # the longest a test call may take, ringing included


class Retention(Frozen):
    """How long recordings are kept (quality checks and disputes: usually 3 to 6 months)."""

    enabled: bool = True
    recordings_days: int = Field(default=180, ge=1, le=3660)
    purge_interval: float = Field(default=6 * 3600.0, ge=60, le=7 * 86_400)
    orphans: bool = True  # also delete files older than the retention that no CDR names


class Logging(Frozen):
    """The log on stderr: `text` for a terminal, `json` (one object per line) for a log collector."""

    format: Literal["text", "json"] = "text"  # `serve --log-format` overrides


class ServiceConfig(Frozen):
    listen: Listen = Listen()
    max_sessions: int = Field(default=2000, ge=1, le=100_000)
    # Connections still sending their AGI header (not yet calls, so not counted in max_sessions); beyond
    # this, new connections are closed at once. None: max(16, max_sessions // 4).
    max_pending_headers: int | None = Field(default=None, ge=1, le=100_000)
    timezone: TimeZoneName = "Asia/Shanghai"
    dialplans_dir: str = "dialplans"
    prompts_dir: str = "ivr_prompts"  # our copy of the prompts (checked by `callrouter check`)
    asterisk_prompts_dir: str = Field(default="callrouter", pattern=r"^[A-Za-z0-9_\-./]{1,200}$")  # as Asterisk plays them
    recordings_dir: str = Field(default="/var/spool/asterisk/monitor/callrouter", pattern=r"^/[A-Za-z0-9_\-./]{1,200}$")
    voicemail_dir: str = Field(default="/var/spool/asterisk/callrouter-voicemail", pattern=r"^/[A-Za-z0-9_\-./]{1,200}$")
    timeouts: Timeouts = Timeouts()
    dialing: Dialing = Dialing()
    blacklist: Blacklist = Blacklist()  # applies to every number
    store: Store = Store()
    cdr: Cdr = Cdr()
    admin: Admin = Admin()
    console: Console = Console()
    exporter: Exporter = Exporter()
    notify: Notify = Notify()
    crm: Crm = Crm()
    ami: Ami = Ami()
    packages: Packages = Packages()
    retention: Retention = Retention()
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    logging: Logging = Logging()

    @property
    def pending_header_limit(self) -> int:
        """`max_pending_headers`, or its default from `max_sessions`: silent sockets must never crowd out calls."""
        if self.max_pending_headers is not None:
            return self.max_pending_headers
        return max(16, self.max_sessions // 4)
