"""The ``[flow]`` area: flow control and error control settings.

Every limit is a small table of its own (``[flow.messages_per_ip]``) with the same
keys, so an admin who has set one can guess the others; ``limit = 0`` turns a limit
off. A listener may override any key in ``[listeners.NAME.flow]``. Each limit
class carries its own default ``limit`` (a table the admin only partly writes
keeps the documented default for the keys it does not set), spelled out rather than
inherited so that ``check-config`` lists the keys in the same order everywhere.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from attrs import field, frozen

from appliance import Check, Duration

Mode = Literal["enforce", "monitor"]
OnStoreFailure = Literal["open", "closed"]

_COUNT = Check(lambda value: value >= 0, "an integer of at least 0 (0 = off)")
_POSITIVE = Check(lambda value: value > 0, "a duration longer than 0s")
_V4_PREFIX = Check(lambda value: 1 <= value <= 32, "a prefix length from 1 to 32")
_V6_PREFIX = Check(lambda value: 1 <= value <= 128, "a prefix length from 1 to 128")


def _is_network_list(values: list[str]) -> bool:
    try:
        for value in values:
            ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


_NETWORKS = Check(_is_network_list, 'a list of IP addresses or networks such as "192.0.2.0/24"')


# --- limits counted in the shared counters, per interval --------------------------------


@frozen(kw_only=True)
class RateLimit:
    """At most ``limit`` events in any ``interval`` (a sliding window)."""

    limit: Annotated[int, _COUNT] = 0
    interval: Annotated[Duration, _POSITIVE] = Duration("1m")
    mode: Mode = "enforce"
    on_store_failure: OnStoreFailure = "open"


@frozen(kw_only=True)
class ConnectionsPerIp:
    """New connections from one client (IP or IPv6 prefix) per interval; the same
    keys as :class:`RateLimit`, on by default."""

    limit: Annotated[int, _COUNT] = 100
    interval: Annotated[Duration, _POSITIVE] = Duration("1m")
    mode: Mode = "enforce"
    on_store_failure: OnStoreFailure = "open"


@frozen(kw_only=True)
class ConcurrentLimit:
    """Sessions open at the same time from one client (no interval)."""

    limit: Annotated[int, _COUNT] = 50
    mode: Mode = "enforce"
    on_store_failure: OnStoreFailure = "open"


@frozen(kw_only=True)
class ConcurrentPerNetwork:
    """Sessions open at the same time from one network (``network_ipv4_prefix``,
    ``network_ipv6_prefix``): a flood from many addresses of one network."""

    limit: Annotated[int, _COUNT] = 200
    mode: Mode = "enforce"
    on_store_failure: OnStoreFailure = "open"


# --- error control, counted in the session -----------------------------------------------


@frozen(kw_only=True)
class SessionLimit:
    """Bad recipients in one session; the one that reaches it is followed by 421 4.7.0."""

    limit: Annotated[int, _COUNT] = 20
    mode: Mode = "enforce"


# --- slowing down and dropping misbehaving clients ---------------------------------------


@frozen(kw_only=True)
class Tarpit:
    """Wait ``delay`` before answering a client with at least ``after_errors`` errors
    (bad commands + bad recipients + auth failures) in its session."""

    delay: Duration = Duration("0s")
    after_errors: Annotated[int, Check(lambda v: v >= 1, "an integer of at least 1")] = 1


@frozen(kw_only=True)
class Pregreet:
    """Hold the banner back for ``delay``; a client that talks first is dropped."""

    delay: Duration = Duration("0s")
    mode: Mode = "enforce"


@frozen(kw_only=True)
class Autoban:
    """Ban a client that had more than N of these in ``window`` (0 = not counted)."""

    auth_failures: Annotated[int, _COUNT] = 0
    bad_recipients: Annotated[int, _COUNT] = 0
    relay_attempts: Annotated[int, _COUNT] = 0
    window: Annotated[Duration, _POSITIVE] = Duration("10m")
    ban_time: Annotated[Duration, _POSITIVE] = Duration("1h")
    action: Literal["abort", "reject"] = "abort"
    mode: Mode = "enforce"
    on_store_failure: OnStoreFailure = "open"


@frozen(kw_only=True)
class FlowSettings:
    """``[flow]`` and ``[listeners.NAME.flow]``."""

    ipv4_prefix: Annotated[int, _V4_PREFIX] = 32
    ipv6_prefix: Annotated[int, _V6_PREFIX] = 64
    network_ipv4_prefix: Annotated[int, _V4_PREFIX] = 24
    network_ipv6_prefix: Annotated[int, _V6_PREFIX] = 48
    exempt_networks: Annotated[list[str], _NETWORKS] = field(
        factory=lambda: ["127.0.0.0/8", "::1/128"])
    exempt_allow_listed: bool = True

    concurrent_connections_per_ip: ConcurrentLimit = field(factory=ConcurrentLimit)
    concurrent_connections_per_network: ConcurrentPerNetwork = field(
        factory=ConcurrentPerNetwork)
    connections_per_ip: ConnectionsPerIp = field(factory=ConnectionsPerIp)
    new_connections: RateLimit = field(factory=RateLimit)

    messages_per_ip: RateLimit = field(factory=RateLimit)
    recipients_per_ip: RateLimit = field(factory=RateLimit)
    messages_per_user: RateLimit = field(factory=RateLimit)
    recipients_per_user: RateLimit = field(factory=RateLimit)
    messages_per_sender_domain: RateLimit = field(factory=RateLimit)
    recipients_per_sender_domain: RateLimit = field(factory=RateLimit)

    bad_recipients: SessionLimit = field(factory=SessionLimit)

    tarpit: Tarpit = field(factory=Tarpit)
    pregreet: Pregreet = field(factory=Pregreet)
    autoban: Autoban = field(factory=Autoban)
