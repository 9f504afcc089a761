"""AUTH GSSAPI (RFC 4752) end to end: a real MIT KDC (tests/kdc_fixture.py), the
server's keytab from it, a real server over STARTTLS. The client side is written
here from RFC 4752 with python-gssapi (smtplib has no GSSAPI)."""

from __future__ import annotations

import base64
import smtplib

import pytest

from tests.kdc_fixture import HOSTNAME, OTHER_SERVICE, USER

from .test_auth import starttls
from .test_receive import MSG, stored

gssapi = pytest.importorskip("gssapi", reason="python-gssapi not installed (the gssapi extra)")

LISTENERS = {"mta": {"tls_mode": "starttls"}}


@pytest.fixture
def gss_app(kdc_env, make_appliance):
    return make_appliance(f"""
        [auth]
        mechanisms = ["GSSAPI", "PLAIN"]
        gssapi_keytab = "{kdc_env.keytab}"
        failure_delay = "0.1s"
        """, listeners=LISTENERS)


def _b64(data: bytes | None) -> str:
    return base64.b64encode(data or b"").decode()


def gssapi_login(c: smtplib.SMTP, service: str = f"smtp@{HOSTNAME}",
                 authzid: bytes = b"") -> tuple[int, bytes]:
    """RFC 4752 client: context tokens until complete, then unwrap the server's
    security-layer offer and answer, wrapped, "no security layer" + authzid."""
    name = gssapi.Name(service, gssapi.NameType.hostbased_service)
    ctx = gssapi.SecurityContext(name=name, usage="initiate")
    token = _b64(ctx.step())
    if len("AUTH GSSAPI " + token) + 2 <= 512:
        code, text = c.docmd("AUTH", "GSSAPI " + token)
    else:  # RFC 4954 4: no initial response that would exceed the 512-octet command line
        code, text = c.docmd("AUTH", "GSSAPI")
        assert (code, text) == (334, b""), text
        code, text = c.docmd(token)
    while code == 334:
        data = base64.b64decode(text)
        if not ctx.complete:
            code, text = c.docmd(_b64(ctx.step(data)))
            continue
        offer = ctx.unwrap(data).message
        assert len(offer) == 4 and offer[0] & 1, offer  # "none" offered
        assert offer[1:] == b"\0\0\0"  # max size 0: no layer
        code, text = c.docmd(_b64(ctx.wrap(b"\x01\0\0\0" + authzid, encrypt=False).message))
    return code, text


def test_gssapi_over_starttls_records_the_principal(gss_app, certs):
    with starttls(gss_app, certs) as c:
        # no users file: GSSAPI alone is offered, PLAIN has no backend
        assert c.esmtp_features["auth"].split() == ["GSSAPI"]
        code, text = gssapi_login(c)
        assert (code, text[:5]) == (235, b"2.7.0"), text
        assert c.sendmail("alice@example.org", ["b@example.net"], MSG) == {}
    env, data = stored(gss_app)
    assert env["client"]["auth_user"] == USER
    assert b" with ESMTPSA id " in data
    assert "mechanism=GSSAPI" in gss_app.log()


def test_authzid_other_than_the_principal_is_refused(gss_app, certs):
    with starttls(gss_app, certs) as c:
        code, text = gssapi_login(c, authzid=b"bob")
        assert (code, text[:5]) == (535, b"5.7.8")
        code, text = gssapi_login(c, authzid=USER.encode())
        assert code == 235


def test_ticket_for_another_service_and_garbage_token_fail_and_server_keeps_serving(
        gss_app, certs):
    service = OTHER_SERVICE.replace("/", "@")  # a real ticket, but not for our keytab
    with starttls(gss_app, certs) as c:
        code, text = gssapi_login(c, service=service)
        assert (code, text[:5]) == (535, b"5.7.8")
        code, text = c.docmd("AUTH", "GSSAPI " + _b64(b"\x60\x03garbage"))
        assert (code, text[:5]) == (535, b"5.7.8")
        assert c.noop()[0] == 250
    with starttls(gss_app, certs) as c:
        assert gssapi_login(c)[0] == 235


def test_client_without_a_ticket_cannot_start(gss_app, certs, kdc_env, monkeypatch, tmp_path):
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{tmp_path / 'empty-ccache'}")
    with starttls(gss_app, certs) as c:
        with pytest.raises(gssapi.exceptions.GSSError):
            gssapi_login(c)  # the client library has no credentials to build a token from
        # a client that starts anyway and gives up: cancelled, and the session goes on
        assert c.docmd("AUTH", "GSSAPI") == (334, b"")
        code, text = c.docmd("*")
        assert (code, text[:5]) == (501, b"5.7.0")
        assert c.noop()[0] == 250


def test_not_offered_without_a_keytab(kdc_env, make_appliance, certs):
    app = make_appliance("""
        [auth]
        mechanisms = ["GSSAPI"]
        """, listeners=LISTENERS)
    with starttls(app, certs) as c:
        assert "auth" not in c.esmtp_features
        code, _ = c.docmd("AUTH", "GSSAPI " + _b64(b"x"))
        assert code in (503, 504)
