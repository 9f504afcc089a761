"""``smtp-appliance selftest`` against our own server (every probe clean, in plain
text, after STARTTLS and over implicit TLS) and against a private Postfix, whose
default smtpd takes a bare LF as a line end: the report must show the difference."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from appliance.selftest import FAIL, NOTE, OK, SKIPPED, Target, run_all
from appliance.selftest.probes import SMUGGLING_ENDINGS
from tests.peers import free_port

ADDRS = dict(mail_from="selftest@client.example", recipients=("probe@example.net",))


def findings(port: int, tls: str = "none", **extra) -> dict[str, object]:
    target = Target(host="127.0.0.1", port=port, tls=tls, quiet=1.0, timeout=15, **ADDRS,
                    **extra)
    return {f.probe: f for f in run_all(target)}


def assert_clean(found: dict) -> None:
    bad = [f for f in found.values() if f.status not in (OK, NOTE, SKIPPED)]
    assert not bad, bad


def test_our_server_is_clean_in_plain_text(appliance):
    found = findings(appliance.port)
    assert_clean(found)
    for name in SMUGGLING_ENDINGS:  # every variant reached the end and was judged
        assert found[f"smuggling {name}"].status == OK, found[f"smuggling {name}"]
    assert found["bare LF in message text"].status == OK
    assert "550 5.6.0" in found["bare LF in message text"].detail
    assert found["NUL in a verb"].status == OK
    assert found["65537-octet command line"].status == OK
    assert found["PROXY v1 header on a non-PROXY listener"].status == OK
    # loopback is exempt from the pregreet check, and it is off by default
    assert found["pipelining before the greeting"].status == NOTE
    assert found["STARTTLS command injection"].status == SKIPPED  # not offered


def test_our_server_is_clean_with_starttls(make_appliance, certs):
    app = make_appliance(listeners={"mta": {"tls_mode": "starttls"}})
    found = findings(app.port, tls="starttls", cafile=str(certs[2]))
    assert_clean(found)
    assert found["STARTTLS command injection"].status == OK
    assert "discarded" in found["STARTTLS command injection"].detail
    assert "starttls_injection" in app.log()
    assert found["smuggling <LF>.<LF>"].status == OK


def test_our_server_is_clean_over_implicit_tls(make_appliance):
    app = make_appliance(listeners={"smtps": {"tls_mode": "implicit"}})
    found = findings(app.port, tls="implicit")
    assert_clean(found)
    assert found["STARTTLS command injection"].status == SKIPPED


def test_pregreet_check_on_is_ok(make_appliance):
    app = make_appliance("""
        [flow]
        exempt_networks = []
        [flow.pregreet]
        delay = "1s"
    """)
    target = Target(host="127.0.0.1", port=app.port, quiet=1.0, timeout=15, **ADDRS)
    from appliance.selftest.probes import pregreet

    finding = pregreet(target)
    assert finding.status == OK, finding
    assert "554 5.7.1" in finding.detail


def test_cli_prints_the_report_and_exit_status(appliance):
    res = subprocess.run(
        [sys.executable, "-m", "appliance", "selftest", f"127.0.0.1:{appliance.port}",
         "--from", ADDRS["mail_from"], "--rcpt", *ADDRS["recipients"], "--quiet-time", "0.5"],
        capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith(f"selftest of 127.0.0.1:{appliance.port} (plain)")
    assert " 0 FAIL, " in res.stdout and " 0 error" in res.stdout
    assert "ok      smuggling <LF>.<LF>" in res.stdout


def test_cli_exit_status_when_nothing_listens():
    res = subprocess.run(
        [sys.executable, "-m", "appliance", "selftest", f"127.0.0.1:{free_port()}",
         "--from", "a@b.example", "--rcpt", "c@d.example"],
        capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert "cannot connect to 127.0.0.1:" in res.stderr and res.stdout == ""


# --- against Postfix ---------------------------------------------------------------------

@pytest.fixture
def postfix():
    from tests.peers import wait_for

    from .postfix import PostfixSmtpd, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = PostfixSmtpd(free_port()).start()
    try:
        wait_for(lambda: _banner(server.port), "Postfix's banner", timeout=60)
        yield server
    finally:
        server.stop()


def _banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            return s.recv(100).startswith(b"220 ")
    except OSError:
        return False


def test_postfix_default_report_differs(postfix):
    """Postfix 3.7's defaults (smtpd_forbid_bare_newline = no) take <LF>.<LF> as
    the end of DATA and pipeline the smuggled transaction in: a FAIL our server
    does not have."""
    found = findings(postfix.port)
    assert found["smuggling <LF>.<LF>"].status == FAIL, found["smuggling <LF>.<LF>"]
    assert found["bare LF in message text"].status == NOTE
