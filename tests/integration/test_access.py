"""Access lists against the real server: refusals at connect with
554 5.7.1 or a silent close, allow over deny, listener overrides, monitor mode,
list files reloaded on SIGHUP and a bad list file refused by check-config and
reload. Clients bind 127.0.0.x source addresses (all of 127/8 is loopback)."""

from __future__ import annotations

import signal
import smtplib
import socket
import time

from .conftest import read_reply
from .test_receive import MSG, talk

DENIED = b"554 5.7.1 mx.test.example Access denied\r\n"


def greeting_from(app, source: str, port: int | None = None,
                  host: str = "127.0.0.1") -> bytes:
    """Connect from ``source``, return the greeting (b"" if closed without one)."""
    with socket.create_connection((host, port or app.port), timeout=10,
                                  source_address=(source, 0)) as s:
        reply = read_reply(s)
        if reply.startswith(b"220"):
            assert talk(s, b"QUIT\r\n").startswith(b"221")
        return reply


def wait_for_log(app, text: str, count: int = 1, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while app.log().count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{app.log()}"
        time.sleep(0.05)


def test_denied_ip_gets_554_then_only_quit_and_others_are_served(make_appliance):
    app = make_appliance("""
        [access]
        deny = ["127.0.0.2"]
    """)
    with socket.create_connection(("127.0.0.1", app.port), timeout=10,
                                  source_address=("127.0.0.2", 0)) as s:
        assert read_reply(s) == DENIED
        assert talk(s, b"EHLO x.example\r\n").startswith(b"503 5.7.1")
        assert talk(s, b"QUIT\r\n").startswith(b"221")
        assert s.recv(10) == b""
    assert greeting_from(app, "127.0.0.1").startswith(b"220 ")
    with smtplib.SMTP("127.0.0.1", app.port, source_address=("127.0.0.3", 0)) as c:
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}
    log = app.log()
    assert "access_refused" in log and "client=127.0.0.2" in log
    assert "list=deny entry=127.0.0.2 source=access.deny[0] action=reject" in log
    assert "trace connect access reject 554 5.7.1 'Access denied'" in log


def test_range_boundaries(make_appliance):
    app = make_appliance("""
        [access]
        deny = ["127.0.0.10-127.0.0.20", "127.0.1.0/30"]
    """)
    assert greeting_from(app, "127.0.0.9").startswith(b"220 ")
    assert greeting_from(app, "127.0.0.10") == DENIED
    assert greeting_from(app, "127.0.0.20") == DENIED
    assert greeting_from(app, "127.0.0.21").startswith(b"220 ")
    assert greeting_from(app, "127.0.0.255").startswith(b"220 ")
    assert greeting_from(app, "127.0.1.0") == DENIED
    assert greeting_from(app, "127.0.1.3") == DENIED
    assert greeting_from(app, "127.0.1.4").startswith(b"220 ")


def test_allow_wins_over_a_denied_range(make_appliance):
    app = make_appliance("""
        [access]
        deny = ["127.0.0.0/8"]
        allow = ["127.0.0.5", "127.0.0.100-127.0.0.101"]
        deny_text = "Not from here"
    """)
    assert greeting_from(app, "127.0.0.5").startswith(b"220 ")
    assert greeting_from(app, "127.0.0.101").startswith(b"220 ")
    assert greeting_from(app, "127.0.0.6") == b"554 5.7.1 mx.test.example Not from here\r\n"
    assert greeting_from(app, "127.0.0.102").startswith(b"554 5.7.1 ")
    assert "access_allowed" in app.log() and "entry=127.0.0.100-127.0.0.101" in app.log()


def test_default_deny_lets_only_the_allow_list_in(make_appliance):
    app = make_appliance("""
        [access]
        default = "deny"
        allow = ["127.0.0.7"]
    """)
    assert greeting_from(app, "127.0.0.7").startswith(b"220 ")
    assert greeting_from(app, "127.0.0.8") == DENIED
    assert 'list=default entry="default = \\"deny\\""' in app.log()


def test_listener_overrides_global_key_by_key(make_appliance):
    app = make_appliance("""
        [access]
        deny = ["127.0.0.3"]
        deny_text = "Go away"

        [listeners.sub.access]
        deny = ["127.0.0.4"]
    """, listeners={"mta": {}, "sub": {}})
    mta, sub = app.ports["mta"], app.ports["sub"]
    go_away = b"554 5.7.1 mx.test.example Go away\r\n"
    assert greeting_from(app, "127.0.0.3", mta) == go_away
    assert greeting_from(app, "127.0.0.4", mta).startswith(b"220 ")
    # sub's own deny list replaces the global one; deny_text is inherited
    assert greeting_from(app, "127.0.0.3", sub).startswith(b"220 ")
    assert greeting_from(app, "127.0.0.4", sub) == go_away
    assert "source=listeners.sub.access.deny[0]" in app.log()


def test_ipv6_client(make_appliance):
    app = make_appliance("""
        [access]
        deny = ["::1/128"]
    """, listeners={"v6": {"address": "::1"}})
    assert greeting_from(app, "::1", host="::1") == DENIED


def test_deny_action_close_says_nothing(make_appliance):
    app = make_appliance("""
        [access]
        deny = ["127.0.0.2"]
        deny_action = "close"
    """)
    with socket.create_connection(("127.0.0.1", app.port), timeout=10,
                                  source_address=("127.0.0.2", 0)) as s:
        assert s.recv(100) == b""  # closed, no banner
    assert greeting_from(app, "127.0.0.3").startswith(b"220 ")
    wait_for_log(app, "action=close")
    assert "access_refused" in app.log()


def test_monitor_mode_accepts_and_logs_what_it_would_refuse(make_appliance):
    app = make_appliance("""
        [access]
        deny = ["127.0.0.2"]
        mode = "monitor"
    """)
    with smtplib.SMTP("127.0.0.1", app.port, source_address=("127.0.0.2", 0)) as c:
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}
    assert len(app.queued()) == 1
    log = app.log()
    assert "access_would_refuse" in log and "client=127.0.0.2" in log
    assert "access_refused" not in log


def test_monitor_mode_per_listener(make_appliance):
    app = make_appliance("""
        [access]
        deny = ["127.0.0.2"]
        [listeners.trial.access]
        mode = "monitor"
    """, listeners={"mta": {}, "trial": {}})
    assert greeting_from(app, "127.0.0.2", app.ports["mta"]) == DENIED
    assert greeting_from(app, "127.0.0.2", app.ports["trial"]).startswith(b"220 ")
    assert "access_would_refuse" in app.log()


def test_list_file_reloaded_on_sighup(make_appliance):
    app = make_appliance("""
        [access]
        deny_file = "deny.txt"
    """, start=False)
    deny = app.config_dir / "deny.txt"
    deny.write_text("# blocked\n127.0.0.2\n")
    app.start()
    assert greeting_from(app, "127.0.0.2") == DENIED
    assert greeting_from(app, "127.0.0.3").startswith(b"220 ")
    assert f"source={deny}:2" in app.log()

    deny.write_text("# blocked\n\n127.0.0.3 # changed\n")
    app.signal(signal.SIGHUP)
    wait_for_log(app, "reloaded")
    assert greeting_from(app, "127.0.0.2").startswith(b"220 ")
    assert greeting_from(app, "127.0.0.3") == DENIED
    assert f"source={deny}:3" in app.log()


def test_bad_list_file_fails_check_config_and_reload_is_refused(make_appliance):
    app = make_appliance("""
        [access]
        deny_file = "deny.txt"
    """, start=False)
    deny = app.config_dir / "deny.txt"
    deny.write_text("127.0.0.2\n")
    app.start()
    assert greeting_from(app, "127.0.0.2") == DENIED

    deny.write_text("127.0.0.3\n10.0.0.0/33\n")
    result = app.cli("check-config")
    assert result.returncode == 1
    expected = (f"{app.config_dir / '50-extra.toml'}: access.deny_file: "
                f"invalid value ({deny}:2: expected a prefix length from 0 to 32 "
                f'(got "10.0.0.0/33"))')
    assert expected in result.stdout + result.stderr, result.stdout + result.stderr

    app.signal(signal.SIGHUP)
    wait_for_log(app, "reload_refused")
    assert f"{deny}:2" in app.log()
    assert greeting_from(app, "127.0.0.2") == DENIED  # the old list stays in force
    assert greeting_from(app, "127.0.0.3").startswith(b"220 ")


def test_inline_entry_error_names_file_key_and_index(make_appliance):
    app = make_appliance("""
        [access]
        allow = ["127.0.0.1", "127.0.0.300"]
    """, start=False)
    result = app.cli("check-config")
    assert result.returncode == 1
    out = result.stdout + result.stderr
    assert f"{app.config_dir / '50-extra.toml'}: access.allow" in out
    assert '(got "127.0.0.300")' in out
