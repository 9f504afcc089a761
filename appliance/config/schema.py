"""The configuration schema: one frozen attrs class per table.

These classes are the contract between the config files and the rest of the
appliance: the loader structures the merged TOML into them, and the server only ever
reads these objects (never the TOML). Defaults here are the documented defaults and
are safe for an internet-facing port 25 (CONFIG-CONVENTIONS: "Defaults are safe").

Constraints that a type cannot express are attached with ``typing.Annotated`` and a
:class:`Check`, so the loader can report every broken key with its path instead of
stopping at the first failing attrs validator.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from attrs import field, frozen

from appliance.config.constraints import Check, at_least
from appliance.config.delivery import Delivery
from appliance.config.units import Duration, FilePath, LogOutputs, Size
from appliance.netlist import ENTRY_EXPECTED, is_entry

__all__ = [
    "AppConfig",
    "Auth",
    "Check",
    "Delivery",
    "Dns",
    "Limits",
    "Listener",
    "LogClasses",
    "Logging",
    "Metrics",
    "PluginConfig",
    "Queue",
    "Server",
    "SniCertificate",
    "Smtp",
    "State",
    "Tls",
]


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_file_or_unset(value: str) -> bool:
    return value == "" or os.path.isfile(value)


def _is_file(value: str) -> bool:
    return bool(value) and os.path.isfile(value)


def _are_sni_names(names: list[str]) -> bool:
    """Host names, or "*." and a domain (one leading wildcard label, as in certificates)."""
    return bool(names) and all(_is_sni_name(name) for name in names)


def _is_sni_name(name: str) -> bool:
    labels = name.removeprefix("*.").split(".")
    return len(name) <= 253 and all(
        0 < len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
        for label in labels)


_REQUIRED_FILE = Check(_is_file, "an existing file")
_SNI_NAMES = Check(
    _are_sni_names, 'a non-empty list of host names such as "mail.example.org" or "*.example.org"')


_POSITIVE_DURATION = Check(lambda value: value > 0, "a duration longer than 0s")
_EXISTING_FILE = Check(_is_file_or_unset, "an existing file")
_AT_LEAST_1_KIB = Check(lambda value: value >= 1024, 'a size of at least "1 KiB"')
#: RFC 5321 4.5.3.1.6: a receiver must take lines of 1000 octets; 0 means no limit.
_LINE_LENGTH = Check(lambda value: value == 0 or value >= 1000,
                     "0 (no limit) or a size of at least 1000 B")
SYSLOG_FACILITIES = (
    "kern user mail daemon auth syslog lpr news uucp cron authpriv ftp "
    "local0 local1 local2 local3 local4 local5 local6 local7"
).split()

TlsMode = Literal["none", "starttls", "implicit"]
#: Network list entries (appliance/netlist.py): an address, a CIDR network, a range.
NetworkEntry = Annotated[str, Check(is_entry, ENTRY_EXPECTED)]


def _is_redis_url(value: str) -> bool:
    """redis://host[:port][/db], rediss://… or unix:///path[?db=N]."""
    try:
        url = urlsplit(value)
        port_ok = url.port is None or url.port > 0  # .port raises on a bad port
    except ValueError:
        return False
    if url.scheme == "unix":
        return bool(url.path)
    db = url.path.lstrip("/")
    return url.scheme in ("redis", "rediss") and bool(url.hostname) and port_ok and (
        db == "" or db.isdigit())


def _is_host_port(value: str) -> bool:
    """host:port or [IPv6]:port."""
    host, colon, port = value.rpartition(":")
    return bool(colon and host.strip("[]") and port.isdigit() and 0 < int(port) < 65536)


@frozen(kw_only=True)
class State:
    """Where the shared counters of flow control, rate limits and bans live."""

    backend: Literal["local", "redis"] = "local"
    redis_url: Annotated[
        str, Check(_is_redis_url, 'a URL such as "redis://127.0.0.1:6379/0"')
    ] = "redis://127.0.0.1:6379/0"
    #: "single": the Redis of ``redis_url``; "sentinel": the master that the Sentinels
    #: in ``redis_nodes`` name for ``redis_service``; "cluster": a Redis Cluster
    #: reached through the seed nodes in ``redis_nodes``. docs/scaling.md.
    redis_mode: Literal["single", "sentinel", "cluster"] = "single"
    redis_nodes: list[Annotated[str, Check(_is_host_port, 'a "host:port" such as'
                                            ' "10.0.0.5:26379"')]] = field(factory=list)
    redis_service: str = "mymaster"
    #: TLS to every Redis node (and Sentinel); ``rediss://`` in ``redis_url`` also
    #: turns it on. The CA to verify them, and a client certificate if they ask.
    redis_tls: bool = False
    redis_tls_ca: Annotated[FilePath, _EXISTING_FILE] = FilePath("")
    redis_tls_certificate: Annotated[FilePath, _EXISTING_FILE] = FilePath("")
    redis_tls_key: Annotated[FilePath, _EXISTING_FILE] = FilePath("")
    key_prefix: str = "smtp-appliance:"
    timeout: Annotated[Duration, _POSITIVE_DURATION] = Duration("250ms")
    retry_interval: Annotated[Duration, _POSITIVE_DURATION] = Duration("5s")
    max_keys: Annotated[int, at_least(1000)] = 100_000


def _is_nameserver(value: str) -> bool:
    """ "192.0.2.53", "192.0.2.53:5353", "2001:db8::53" or "[2001:db8::53]:5353"."""
    host, port = value, "53"
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                return False
            port = rest[1:]
    elif value.count(":") == 1:
        host, port = value.split(":")
    return _is_ip(host) and port.isdigit() and 1 <= int(port) <= 65535


_NAMESERVERS = Check(
    lambda values: all(_is_nameserver(v) for v in values),
    'a list of nameservers such as "192.0.2.53", "192.0.2.53:5353" or "[2001:db8::53]:53"')


@frozen(kw_only=True)
class Dns:
    """The one DNS resolver of the appliance (sender checks: SPF, DNSBL, MX, PTR).
    No nameservers: the system's, from /etc/resolv.conf."""

    nameservers: Annotated[list[str], _NAMESERVERS] = field(factory=list)
    timeout: Annotated[Duration, _POSITIVE_DURATION] = Duration("5s")
    retries: Annotated[int, at_least(0)] = 1
    cache_size: Annotated[int, at_least(0)] = 10000


@frozen(kw_only=True)
class Server:
    """Settings of the whole server process (not of one listener)."""

    hostname: str = ""
    banner: str = "#HostName# ESMTP smtp-appliance"
    max_sessions: Annotated[int, at_least(1)] = 10000
    # Stress (as Postfix's smtpd under "stress"): from this share of max_sessions
    # in use, shorter timeouts cut slow clients early. 0 = never.
    stress_threshold: Annotated[int, Check(lambda v: 0 <= v <= 100,
                                           "a percentage from 0 to 100")] = 80
    stress_command_timeout: Annotated[Duration, _POSITIVE_DURATION] = Duration("10s")
    stress_data_timeout: Annotated[Duration, _POSITIVE_DURATION] = Duration("10s")
    workers: Annotated[int, at_least(0)] = 1
    graceful_timeout: Duration = Duration("30s")
    plugin_timeout: Annotated[Duration, _POSITIVE_DURATION] = Duration("30s")
    state: State = field(factory=State)
    # Started as root: the account the server becomes once its listeners are bound
    # (appliance/server/privileges.py). "" = stay as started.
    user: str = ""
    group: str = ""


@frozen(kw_only=True)
class SniCertificate:
    """A further certificate, served to clients that ask for one of ``names``."""

    names: Annotated[list[str], _SNI_NAMES]
    certificate: Annotated[FilePath, _REQUIRED_FILE]
    key: Annotated[FilePath, _REQUIRED_FILE]


@frozen(kw_only=True)
class Tls:
    """Certificates and protocol settings, global or overridden per listener."""

    certificate: Annotated[FilePath, _EXISTING_FILE] = FilePath("")
    key: Annotated[FilePath, _EXISTING_FILE] = FilePath("")
    sni: list[SniCertificate] = field(factory=list)
    client_ca: Annotated[FilePath, _EXISTING_FILE] = FilePath("")
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    ciphers: str = ""
    dh_params: Annotated[FilePath, _EXISTING_FILE] = FilePath("")
    handshake_timeout: Annotated[Duration, _POSITIVE_DURATION] = Duration("30s")
    #: Serve nothing but EHLO/HELO, STARTTLS, NOOP, RSET and QUIT before TLS
    #: (Postfix's smtpd_tls_security_level = encrypt); AUTH stays optional.
    required: bool = False


@frozen(kw_only=True)
class Limits:
    """Per-session and per-message limits, global or overridden per listener."""

    max_message_size: Annotated[Size, _AT_LEAST_1_KIB] = Size("10 MiB")
    max_recipients: Annotated[int, at_least(1)] = 1000
    recipient_overshoot: Annotated[int, at_least(0)] = 100
    max_messages_per_session: Annotated[int, at_least(0)] = 1000
    max_received_headers: Annotated[int, at_least(1)] = 30
    max_bad_commands: Annotated[int, at_least(1)] = 8
    max_header_size: Annotated[Size, _AT_LEAST_1_KIB] = Size("256 KiB")
    max_message_line_length: Annotated[Size, _LINE_LENGTH] = Size(0)
    session_timeout: Annotated[Duration, _POSITIVE_DURATION] = Duration("15m")
    command_timeout: Annotated[Duration, _POSITIVE_DURATION] = Duration("120s")
    data_timeout: Annotated[Duration, _POSITIVE_DURATION] = Duration("120s")
    message_timeout: Annotated[Duration, _POSITIVE_DURATION] = Duration("10m")


#: SASL mechanisms the appliance implements (docs/auth.md).
SASL_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "SCRAM-SHA-256",
                   "XOAUTH2", "OAUTHBEARER", "GSSAPI")
_MECHANISMS = Check(
    lambda names: all(name in SASL_MECHANISMS for name in names),
    "a list of SASL mechanisms from " + ", ".join(f'"{m}"' for m in SASL_MECHANISMS),
)


@frozen(kw_only=True)
class Auth:
    """SMTP AUTH (RFC 4954), global or overridden per listener. Defaults: no AUTH
    before TLS (Axigen's disableAUTH_on_non_SSL), and not required (port 25)."""

    mechanisms: Annotated[list[str], _MECHANISMS] = field(
        factory=lambda: ["PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "SCRAM-SHA-256"])
    plaintext_mechanisms: Annotated[list[str], _MECHANISMS] = field(factory=list)
    required: bool = False
    max_failures: Annotated[int, at_least(1)] = 3
    failure_delay: Duration = Duration("1s")
    realm: str = ""
    users_file: Annotated[FilePath, _EXISTING_FILE] = FilePath("")
    gssapi_keytab: Annotated[FilePath, _EXISTING_FILE] = FilePath("")


@frozen(kw_only=True)
class Smtp:
    """Protocol behaviour, global or overridden per listener."""

    bare_linefeed: Literal["reject", "normalize"] = "reject"
    received_header: Literal["all", "non-authenticated", "none"] = "all"
    vrfy: bool = False
    expn: bool = False
    #: Clients allowed to send XCLIENT / XFORWARD (Postfix's smtpd_authorized_xclient_hosts
    #: and smtpd_authorized_xforward_hosts); only they see them in the EHLO reply.
    xclient_hosts: list[NetworkEntry] = field(factory=list)
    xforward_hosts: list[NetworkEntry] = field(factory=list)


@frozen(kw_only=True)
class Listener:
    """One listening socket, with its limits, smtp and tls settings fully resolved.

    ``limits``, ``smtp`` and ``tls`` are the *effective* tables: the listener's own
    override for each key it sets, the global table's value for every other key.
    The TLS mode is ``tls_mode`` because ``tls`` is the override table. ``areas`` holds
    the effective table of every area owned by a plugin (area name -> ``Area``
    instance), resolved the same way; it is filled in by the loader, not set in TOML.
    """

    address: Annotated[
        str, Check(_is_ip, 'an IPv4 or IPv6 address such as "127.0.0.1" or "::"')
    ] = "127.0.0.1"
    port: Annotated[int, Check(lambda value: 1 <= value <= 65535, "a port from 1 to 65535")]
    tls_mode: TlsMode = "none"
    enabled: bool = True
    max_sessions: Annotated[int, at_least(1)] | None = None
    banner: str | None = None
    #: A PROXY protocol header (HAProxy's proxy-protocol.txt) before anything else,
    #: from ``proxy_trusted_networks`` only; see docs/scaling.md.
    proxy_protocol: Literal["off", "v1", "v2", "any"] = "off"
    proxy_trusted_networks: list[NetworkEntry] = field(factory=list)
    proxy_timeout: Annotated[Duration, _POSITIVE_DURATION] = Duration("5s")
    limits: Limits = field(factory=Limits)
    smtp: Smtp = field(factory=Smtp)
    tls: Tls = field(factory=Tls)
    auth: Auth = field(factory=Auth)
    areas: dict[str, Any] = field(factory=dict)


@frozen(kw_only=True)
class Queue:
    """Where accepted messages are spooled."""

    directory: Annotated[FilePath, Check(bool, "a directory path")] = FilePath(
        "/var/spool/smtp-appliance"
    )
    fsync: bool = True
    #: How long the hand-off of an accepted message (the ``queue_message`` hook: the
    #: spool's fsynced commit) may take before the client gets 451: as long as a
    #: client waits for the reply to its end of data (RFC 5321 4.5.3.2.6, 10 minutes).
    timeout: Annotated[Duration, _POSITIVE_DURATION] = Duration("10m")


def _is_syslog_address(value: str) -> bool:
    kind, _, rest = value.partition(":")
    if kind == "unix":
        return rest.startswith("/")
    host, _, port = rest.rpartition(":")
    return kind == "inet" and bool(host) and port.isdigit() and 0 < int(port) < 65536


#: A class's threshold: "" follows ``[logging] level``; "off" logs none of it.
ClassLevel = Literal["", "off", "debug", "info", "warning", "error"]


@frozen(kw_only=True)
class LogClasses:
    """Per event class, the lowest level logged (docs/operations.md, "Event classes")."""

    connection: ClassLevel = ""
    tls: ClassLevel = ""
    auth: ClassLevel = ""
    #: every command and reply of a session, for debugging; AUTH data never
    transcript: ClassLevel = "off"
    verdict: ClassLevel = ""
    queue: ClassLevel = ""
    delivery: ClassLevel = ""
    disconnect: ClassLevel = ""
    server: ClassLevel = ""


@frozen(kw_only=True)
class Logging:
    """Where and how the appliance logs."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    destination: LogOutputs = LogOutputs("stderr")
    file: FilePath = FilePath("")
    syslog_facility: Annotated[
        str, Check(SYSLOG_FACILITIES.__contains__, 'a syslog facility such as "mail" or "local0"')
    ] = "mail"
    #: "" is the local syslog daemon's /dev/log
    syslog_address: Annotated[str, Check(_is_syslog_address,
                                         '"unix:/path", "inet:host:port" or "" (/dev/log)')] = ""
    journal_socket: FilePath = FilePath("/run/systemd/journal/socket")
    classes: LogClasses = field(factory=LogClasses)


def _is_listen_address(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    return value == "" or (bool(sep) and port.isdigit() and 0 < int(port) < 65536
                           and _is_ip(host.strip("[]")))


@frozen(kw_only=True)
class Metrics:
    """The Prometheus endpoint; off unless ``listen`` is set."""

    listen: Annotated[str, Check(_is_listen_address,
                                 'an address and port such as "127.0.0.1:9465" or "[::1]:9465"'
                                 ', or "" (off)')] = ""


@frozen(kw_only=True)
class PluginConfig:
    """The keys every plugin has; a plugin's own config class subclasses this.

    A plugin declares its own keys as kw_only fields of a ``@frozen`` subclass; they
    may use :class:`~appliance.config.units.Size`, ``Duration``, ``FilePath``,
    ``Literal`` and ``Annotated[..., Check(...)]`` like the core tables do.
    """

    enabled: bool = True
    priority: int = 100
    mode: Literal["enforce", "monitor"] = "enforce"


@frozen(kw_only=True)
class AppConfig:
    """The whole validated configuration, as read by the server."""

    server: Server = field(factory=Server)
    listeners: dict[str, Listener] = field(factory=dict)
    tls: Tls = field(factory=Tls)
    limits: Limits = field(factory=Limits)
    smtp: Smtp = field(factory=Smtp)
    auth: Auth = field(factory=Auth)
    queue: Queue = field(factory=Queue)
    delivery: Delivery = field(factory=Delivery)
    logging: Logging = field(factory=Logging)
    metrics: Metrics = field(factory=Metrics)
    dns: Dns = field(factory=Dns)
    plugins: dict[str, PluginConfig] = field(factory=dict)
    #: Areas owned by plugins: area name -> the global ``Area`` instance ([access]).
    areas: dict[str, Any] = field(factory=dict)
    #: The files read, in merge order.
    sources: tuple[Path, ...] = ()
    #: Which file set each key, by dotted key path ("listeners.mta.port"); for reports.
    origins: dict[str, Path] = field(factory=dict, eq=False, repr=False)
