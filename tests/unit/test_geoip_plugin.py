"""The geoip plugin's decision on real SessionContext and AppConfig objects and a
real MMDB file (tests/mmdb.py); tests/integration/test_geoip.py runs it in the
server. Config validation goes through the real loader."""

from __future__ import annotations

import pytest
from appliance_plugins.geoip import GeoIPArea, GeoIPPlugin
from appliance_plugins.geoip.database import client_address, is_private

from appliance.config import AppConfig, ConfigError, Listener, load_config
from appliance.hooks.verdict import Action
from appliance.mail.context import SessionContext
from tests.mmdb import write_country_db
from tests.unit.plugin_host import ask


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return str(write_country_db(tmp_path_factory.mktemp("geoip") / "country.mmdb"))


def session(ip: str, listener: str = "mta") -> SessionContext:
    return SessionContext(session_id="S1", listener=listener, local_ip="127.0.0.1",
                          local_port=25, remote_ip=ip, remote_port=4000)


def plugin(area: GeoIPArea, mode: str = "enforce", **listener_areas) -> GeoIPPlugin:
    listeners = {"mta": Listener(port=25, areas={"geoip": area})}
    for name, own in listener_areas.items():
        listeners[name] = Listener(port=26, areas={"geoip": own})
    p = GeoIPPlugin(GeoIPPlugin.Config(mode=mode))
    p.on_configure(AppConfig(listeners=listeners, areas={"geoip": area}))
    return p


def connect(p: GeoIPPlugin, ip: str, listener: str = "mta"):
    s = session(ip, listener)
    return p.on_connect(s), s


def country(s: SessionContext) -> str | None:
    """GeoIPResult: the country the plugin recorded (None: private, unknown, not run)."""
    return s.checks.value("geoip", "country")


def banned(s: SessionContext) -> bool | None:
    """IsGeoIPBanned, as the plugin recorded it."""
    return s.checks.value("geoip", "banned")


def test_country_found_set_on_the_session_and_banned_list(db):
    p = plugin(GeoIPArea(database=db, banned_countries=["cn"]))
    v, s = connect(p, "8.8.8.8")
    assert v is None and (country(s), banned(s)) == ("US", False)
    v, s = connect(p, "2001:db8:3::9", )  # documentation range: private, not looked up
    assert v is None and country(s) is None
    p = plugin(GeoIPArea(database=db, banned_countries=["CN"], private_addresses="lookup"))
    v, s = connect(p, "2001:db8:3::9")
    assert (country(s), banned(s)) == ("CN", True)
    assert (v.action, v.reply_parts()) == (
        Action.REJECT, (554, "5.7.1", "Connections from your country (CN) are not accepted"))


def test_allowed_list_bans_everything_else(db):
    p = plugin(GeoIPArea(database=db, allowed_countries=["DE", "FR"],
                         private_addresses="lookup"))
    assert connect(p, "127.0.1.1")[0] is None
    assert connect(p, "127.0.2.254")[0] is None
    v, s = connect(p, "127.0.3.1")
    assert v.action is Action.REJECT and banned(s) and country(s) == "CN"
    v, s = connect(p, "::1")
    assert v.action is Action.REJECT and country(s) == "JP"
    # boundaries of 127.0.1.0/24 (DE): the neighbours are not in the database
    v, s = connect(p, "127.0.0.255")
    assert v is None and country(s) is None and not banned(s)


def test_banned_wins_over_allowed(db):
    p = plugin(GeoIPArea(database=db, allowed_countries=["DE"], banned_countries=["DE"],
                         private_addresses="lookup"))
    assert connect(p, "127.0.1.1")[0].action is Action.REJECT


def test_registered_country_and_records_without_country(db):
    p = plugin(GeoIPArea(database=db, private_addresses="lookup", unknown_country="ban"))
    v, s = connect(p, "127.0.4.7")
    assert v is None and country(s) == "US"
    v, s = connect(p, "127.0.5.7")  # a record, but no country in it
    assert v.action is Action.REJECT and country(s) is None
    assert v.reply_parts()[2] == "Connections from your country (unknown) are not accepted"
    v, s = connect(p, "127.0.9.7")  # not in the database at all
    assert v.action is Action.REJECT and banned(s)


def test_private_addresses_allow_lookup_ban(db):
    area = {"database": db, "banned_countries": ["JP"]}
    assert connect(plugin(GeoIPArea(**area)), "::1")[0] is None          # default: allow
    assert connect(plugin(GeoIPArea(**area, private_addresses="lookup")), "::1")[0] is not None
    v, s = connect(plugin(GeoIPArea(database=db, private_addresses="ban")), "10.1.2.3")
    assert v.action is Action.REJECT and banned(s) and country(s) is None
    # an unknown country is not "private": default allow
    assert connect(plugin(GeoIPArea(database=db, private_addresses="ban")), "8.8.4.4")[0] is None


def test_actions(db):
    base = {"database": db, "banned_countries": ["US"]}
    v, _ = connect(plugin(GeoIPArea(**base, action="tmpreject", text="Later")), "8.8.8.8")
    assert (v.action, v.reply_parts()) == (Action.TMPREJECT, (421, "4.7.1", "Later"))
    v, _ = connect(plugin(GeoIPArea(**base, action="abort")), "8.8.8.8")
    assert v.action is Action.ABORT and v.reply
    v, s = connect(plugin(GeoIPArea(**base, action="continue")), "8.8.8.8")
    assert v is None and banned(s) is True


@pytest.mark.parametrize("area_mode, plugin_mode", [("monitor", "enforce"),
                                                     ("enforce", "monitor")])
def test_monitor_traces_and_lets_in(db, area_mode, plugin_mode):
    p = plugin(GeoIPArea(database=db, banned_countries=["US"], mode=area_mode),
               mode=plugin_mode)
    s = session("8.8.8.8")
    assert ask(p, "geoip", "connect", s) is None and banned(s) is True
    assert [str(t) for t in s.trace] == [
        "connect geoip reject 554 5.7.1 'Connections from your country (US) are not "
        "accepted' (monitor)"]


def test_listener_override_and_no_database(db):
    p = plugin(GeoIPArea(database=db, banned_countries=["US"]),
               submission=GeoIPArea(database=db))
    assert connect(p, "8.8.8.8")[0] is not None
    v, s = connect(p, "8.8.8.8", "submission")
    assert v is None and country(s) == "US"
    # no database: the plugin does nothing, whatever the lists say
    v, s = connect(plugin(GeoIPArea(banned_countries=["US"], unknown_country="ban")), "8.8.8.8")
    assert v is None and country(s) is None


def test_reload_reads_the_new_file(tmp_path):
    path = tmp_path / "c.mmdb"
    write_country_db(path, {"8.8.8.0/24": {"country": {"iso_code": "US"}}})
    area = GeoIPArea(database=str(path), banned_countries=["FR"])
    assert country(connect(plugin(area), "8.8.8.8")[1]) == "US"
    write_country_db(path.with_suffix(".new"), {"8.8.8.0/24": {"country": {"iso_code": "FR"}}})
    path.with_suffix(".new").replace(path)  # how updaters replace it: atomically
    v, s = connect(plugin(area), "8.8.8.8")
    assert country(s) == "FR" and v.action is Action.REJECT


def test_file_broken_after_validation_fails_open(tmp_path, caplog):
    path = tmp_path / "c.mmdb"
    write_country_db(path)
    area = GeoIPArea(database=str(path), unknown_country="ban")
    path.write_bytes(b"not a database")
    p = plugin(area)
    v, s = connect(p, "8.8.8.8")
    assert v is None and not banned(s)
    assert "geoip_database_unavailable" in caplog.text


def test_client_address_forms():
    assert str(client_address("::ffff:8.8.8.8")) == "8.8.8.8"
    assert str(client_address("fe80::1%eth0")) == "fe80::1"
    assert client_address("not an ip") is None
    assert is_private(client_address("127.0.0.1")) and is_private(client_address("fd00::1"))
    assert not is_private(client_address("8.8.8.8"))


def _load(tmp_path, text: str):
    conf = tmp_path / "conf.d"
    conf.mkdir(exist_ok=True)
    (conf / "55-geoip.toml").write_text(text)
    return load_config(conf, plugin_schemas={"geoip": GeoIPPlugin.Config},
                       plugin_areas={"geoip": GeoIPArea})


def test_config_errors_name_file_key_and_expectation(tmp_path):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, '[geoip]\nbanned_countries = ["CHN"]\nprivate_addresses = "skip"\n')
    text = str(err.value)
    assert ('55-geoip.toml: geoip.banned_countries[0]: expected a two-letter ISO 3166 '
            'country code such as "DE" (got "CHN")') in text
    assert "55-geoip.toml: geoip.private_addresses: expected one of" in text


def test_config_bad_or_missing_database(tmp_path):
    (tmp_path / "bad.mmdb").write_bytes(b"garbage")
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, '[geoip]\ndatabase = "../bad.mmdb"\n')
    assert ("55-geoip.toml: geoip.database: invalid value (expected a MaxMind DB file (got "
            f"{tmp_path / 'bad.mmdb'}: not one))") in str(err.value)
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, '[listeners.mta]\nport = 2525\n[listeners.mta.geoip]\n'
                        'database = "missing.mmdb"\n')
    assert ("55-geoip.toml: listeners.mta.geoip.database: invalid value (expected an "
            "existing MaxMind DB file (got ") in str(err.value)
    assert "missing.mmdb: no such file))" in str(err.value)


def test_config_relative_database_path(tmp_path):
    write_country_db(tmp_path / "ok.mmdb")
    config = _load(tmp_path, '[geoip]\ndatabase = "../ok.mmdb"\n')
    assert config.areas["geoip"].database == str(tmp_path / "ok.mmdb")


def test_allow_listed_clients_are_looked_up_not_banned(db):
    s = session("8.8.8.8")
    s.checks.record("access", "allow", allow_listed=True)  # what the access plugin sets
    assert plugin(GeoIPArea(database=db, banned_countries=["US"])).on_connect(s) is None
    assert (country(s), banned(s)) == ("US", False)
    s = session("8.8.8.8")
    s.checks.record("access", "allow", allow_listed=True)
    p = plugin(GeoIPArea(database=db, banned_countries=["US"], exempt_allow_listed=False))
    assert p.on_connect(s).action is Action.REJECT

