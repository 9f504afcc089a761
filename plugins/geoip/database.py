"""The GeoIP database: a MaxMind-format (MMDB) file, opened once per configuration
generation and asked for the country of a client address.

MaxMind's GeoLite2/GeoIP2 Country and City files and the free DB-IP "lite" files
share the record layout read here: ``country.iso_code``, else
``registered_country.iso_code`` (anycast and satellite networks often have only
the latter). Pure: no gevent; maxminddb reads the file through mmap.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import maxminddb
from maxminddb.errors import InvalidDatabaseError

#: What a lookup found (``session.checks["geoip"].result``).
FOUND = "found"          # a country
PRIVATE = "private"      # loopback, RFC 1918, link-local, ULA…: not looked up
UNKNOWN = "unknown"      # not in the database, or a record without a country
NO_DATABASE = "no-database"  # the file could not be read when the config took effect


class DatabaseError(ValueError):
    """The file is missing or not a MaxMind DB; the message says which."""


def open_database(path: str) -> Any:
    """Open ``path`` and check it is a MaxMind DB with IP data in it."""
    try:
        reader = maxminddb.open_database(path, maxminddb.MODE_AUTO)
    except FileNotFoundError:
        raise DatabaseError(f"expected an existing MaxMind DB file (got {path}: "
                            "no such file)") from None
    except (OSError, InvalidDatabaseError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not one"
        raise DatabaseError(f"expected a MaxMind DB file (got {path}: {reason})") from None
    return reader


def check_database(path: str) -> None:
    """Open and close it: the config validator, so that check-config reports a bad
    file and a reload with one is refused."""
    open_database(path).close()


def client_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address; an IPv4-mapped IPv6 one (``::ffff:192.0.2.7``, from a
    dual-stack listener) as the IPv4 address it is. None if it does not parse."""
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def is_private(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Not routed on the internet: loopback, private, link-local, ULA, reserved and
    documentation ranges (Python's ``is_global`` is false for all of them)."""
    return not addr.is_global


def country_of(reader: Any, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """The ISO 3166 alpha-2 code the database gives ``addr``, upper case; None if the
    database does not know the address. An IPv4 address in an IPv6-only database is
    looked up as ``::a.b.c.d`` by maxminddb itself; an IPv6 address in an IPv4-only
    database is unknown."""
    try:
        record = reader.get(addr)
    except ValueError:  # IPv6 address, IPv4-only database
        return None
    if not isinstance(record, dict):
        return None
    for key in ("country", "registered_country"):
        part = record.get(key)
        if isinstance(part, dict) and isinstance(part.get("iso_code"), str):
            return part["iso_code"].upper()
    return None
