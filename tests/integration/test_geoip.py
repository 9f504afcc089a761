"""GeoIP against the real server, with a real MMDB file written in the
set-up (tests/mmdb.py) that maps 127.0.x.0/24 ranges and ::1 to countries, and
``private_addresses = "lookup"`` so that loopback clients are looked up: banned
and allowed countries, the greeting refusal, a listener override, IPv6, monitor
mode, and the database replaced on SIGHUP (a bad one refused by the reload)."""

from __future__ import annotations

import json
import signal
import smtplib
import socket

import pytest

from tests.mmdb import write_country_db

from .conftest import read_reply
from .test_access import greeting_from, wait_for_log
from .test_receive import MSG, talk


def banned(country: str) -> bytes:
    return (b"554 5.7.1 mx.test.example Connections from your country (" +
            country.encode() + b") are not accepted\r\n")


@pytest.fixture
def geo_db(tmp_path):
    return write_country_db(tmp_path / "country.mmdb")


def have_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_banned_country_refused_at_greeting_others_served(make_appliance, geo_db):
    listeners = {"mta": {}}
    if have_ipv6_loopback():
        listeners["mta6"] = {"address": "::1"}
    app = make_appliance(f"""
        [geoip]
        database = "{geo_db}"
        banned_countries = ["CN", "JP"]
        private_addresses = "lookup"
        [listeners.mta.geoip]
        banned_countries = ["CN"]
    """, listeners=listeners)
    with socket.create_connection(("127.0.0.1", app.ports["mta"]), timeout=10,
                                  source_address=("127.0.3.1", 0)) as s:
        assert read_reply(s) == banned("CN")
        assert talk(s, b"EHLO x.example\r\n").startswith(b"503 5.7.1")
        assert talk(s, b"QUIT\r\n").startswith(b"221")
    # the range's last address, and the first address after it
    assert greeting_from(app, "127.0.3.255", app.ports["mta"]) == banned("CN")
    assert greeting_from(app, "127.0.4.0", app.ports["mta"]).startswith(b"220 ")
    # others keep being served, and their country travels with the message
    with smtplib.SMTP("127.0.0.1", app.ports["mta"], source_address=("127.0.1.9", 0)) as c:
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}
    env = json.loads(app.queued()[-1].read_text())
    assert env["checks"]["geoip"]["country"] == "DE"
    assert env["checks"]["geoip"]["banned"] is False
    log = app.log()
    assert "geoip_refused" in log and "client=127.0.3.1" in log and "country=CN" in log
    assert "trace connect geoip reject 554 5.7.1" in log
    if "mta6" in app.ports:  # IPv6: ::1 is JP, banned by the global list only
        assert greeting_from(app, "::1", app.ports["mta6"], host="::1") == banned("JP")
        assert "client=::1" in app.log()


def test_allowed_countries_abort_and_monitor_listener(make_appliance, geo_db):
    app = make_appliance(f"""
        [geoip]
        database = "{geo_db}"
        allowed_countries = ["DE", "FR"]
        private_addresses = "lookup"
        action = "abort"
        text = "No mail from #Country# here"
        [listeners.watch.geoip]
        mode = "monitor"
    """, listeners={"mta": {}, "watch": {}})
    assert greeting_from(app, "127.0.2.1", app.ports["mta"]).startswith(b"220 ")
    with socket.create_connection(("127.0.0.1", app.ports["mta"]), timeout=10,
                                  source_address=("127.0.4.1", 0)) as s:
        assert read_reply(s) == b"421 4.7.0 mx.test.example No mail from US here\r\n"
        assert s.recv(10) == b""  # closed
    # not in the database: unknown_country = "allow" by default
    assert greeting_from(app, "127.0.9.1", app.ports["mta"]).startswith(b"220 ")
    assert greeting_from(app, "127.0.4.1", app.ports["watch"]).startswith(b"220 ")
    log = app.log()
    would = [line for line in log.splitlines() if "geoip_would_refuse" in line]
    assert len(would) == 1 and "listener=watch" in would[0] and "country=US" in would[0]
    assert "reason=not-allowed action=abort" in would[0]


def test_sighup_reads_the_new_database_and_refuses_a_bad_one(make_appliance, tmp_path):
    db = write_country_db(tmp_path / "country.mmdb",
                          {"127.0.7.0/24": {"country": {"iso_code": "FR"}}})
    app = make_appliance(f"""
        [geoip]
        database = "{db}"
        banned_countries = ["RU"]
        private_addresses = "lookup"
    """)
    assert greeting_from(app, "127.0.7.7").startswith(b"220 ")
    new = write_country_db(tmp_path / "country.new",
                           {"127.0.7.0/24": {"country": {"iso_code": "RU"}}})
    new.replace(db)
    app.signal(signal.SIGHUP)
    wait_for_log(app, "reloaded")
    assert greeting_from(app, "127.0.7.7") == banned("RU")

    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"this is not a database")
    bad.replace(db)
    app.signal(signal.SIGHUP)
    wait_for_log(app, "reload_refused")
    assert "expected a MaxMind DB file" in app.log()
    assert greeting_from(app, "127.0.7.7") == banned("RU")  # the old one stays in force
