"""A real MaxMind DB (MMDB) file for the GeoIP tests, written in the test set-up
with mmdb-writer, in the record layout of MaxMind's GeoLite2-Country."""

from __future__ import annotations

from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet

#: Networks of the test database: loopback sub-ranges so that test clients (which
#: can bind any 127.0.0.x source address, and ::1) come from known countries.
COUNTRIES: dict[str, dict] = {
    "127.0.1.0/24": {"country": {"iso_code": "DE"}},
    "127.0.2.0/24": {"country": {"iso_code": "FR"}},
    "127.0.3.0/24": {"country": {"iso_code": "CN"}},
    # Only the registered country (anycast, satellite links): used as the country.
    "127.0.4.0/24": {"registered_country": {"iso_code": "US"}},
    # A record without any country (MaxMind has some, e.g. for anonymous proxies).
    "127.0.5.0/24": {"continent": {"code": "EU"}},
    "::1/128": {"country": {"iso_code": "JP"}},
    "8.8.8.0/24": {"country": {"iso_code": "US"}},
    "2a00:1450::/32": {"country": {"iso_code": "IE"}},
    "2001:db8:3::/48": {"country": {"iso_code": "CN"}},
}


def write_country_db(path: Path, networks: dict[str, dict] | None = None) -> Path:
    """Write an IPv6 database (IPv4 networks in its ::/96 subtree, as MaxMind does)."""
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country",
                        languages=["en"], description="smtp-appliance tests",
                        ipv4_compatible=True)
    for network, record in (COUNTRIES if networks is None else networks).items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path
