"""The GSSAPI mechanism (RFC 4752) as a state machine, against a real MIT KDC
(tests/kdc_fixture.py) and its keytab; the client side is python-gssapi driven
here by hand, so every wrong security-layer answer can be sent."""

from __future__ import annotations

import pytest

from appliance.sasl import Challenge, CredentialsBackend, Failure, SASLOptions, Success
from tests.kdc_fixture import HOSTNAME, USER

gssapi = pytest.importorskip("gssapi", reason="python-gssapi not installed (the gssapi extra)")
from appliance.sasl.gssapi_mech import GSSAPI  # noqa: E402 - needs gssapi


@pytest.fixture
def options(kdc_env):
    return SASLOptions(backend=CredentialsBackend(), hostname=HOSTNAME,
                       gssapi_keytab=str(kdc_env.keytab))


def _until_layer(mech: GSSAPI) -> tuple[gssapi.SecurityContext, bytes]:
    """Run the context exchange; return the client context and the wrapped offer."""
    ctx = gssapi.SecurityContext(
        name=gssapi.Name(f"smtp@{HOSTNAME}", gssapi.NameType.hostbased_service),
        usage="initiate")
    step = mech.start(ctx.step())
    while isinstance(step, Challenge) and not ctx.complete:
        step = mech.respond(ctx.step(step.data) or b"")
    assert isinstance(step, Challenge), step
    if not step.data:  # our last context token was answered; the offer follows
        step = mech.respond(b"")
    return ctx, step.data


def test_offer_is_none_with_max_size_zero_and_identity_drops_the_realm(options):
    mech = GSSAPI(options)
    ctx, offer = _until_layer(mech)
    assert ctx.unwrap(offer).message == b"\x01\0\0\0"
    step = mech.respond(ctx.wrap(b"\x01\0\0\0", encrypt=False).message)
    assert step == Success(identity=USER, authcid=USER)
    assert mech.done


@pytest.mark.parametrize("answer", [b"\x02\0\0\0", b"\x04\0\x10\0", b"\x01\0\0"])
def test_a_layer_not_offered_or_a_short_answer_is_malformed(options, answer):
    mech = GSSAPI(options)
    ctx, _ = _until_layer(mech)
    step = mech.respond(ctx.wrap(answer, encrypt=False).message)
    assert isinstance(step, Failure) and (step.code, step.enhanced) == (501, "5.5.2")


def test_unwrapped_layer_answer_is_malformed(options):
    mech = GSSAPI(options)
    _until_layer(mech)
    step = mech.respond(b"\x01\0\0\0")
    assert isinstance(step, Failure) and step.code == 501


def test_authzid_needs_the_authorization_hook(kdc_env):
    opts = SASLOptions(backend=CredentialsBackend(), hostname=HOSTNAME,
                       gssapi_keytab=str(kdc_env.keytab),
                       authorize=lambda authcid, authzid: (authcid, authzid) == (USER, "sales"))
    for authzid, expected in ((b"sales", Success("sales", USER)), (b"bob", 535)):
        mech = GSSAPI(opts)
        ctx, _ = _until_layer(mech)
        step = mech.respond(ctx.wrap(b"\x01\0\0\0" + authzid, encrypt=False).message)
        assert step == expected if isinstance(expected, Success) else step.code == expected


def test_empty_token_is_malformed_and_missing_keytab_is_temporary(options, tmp_path):
    assert GSSAPI(options).start(b"").code == 501
    missing = SASLOptions(backend=CredentialsBackend(), hostname=HOSTNAME,
                          gssapi_keytab=str(tmp_path / "no.keytab"))
    ctx = gssapi.SecurityContext(
        name=gssapi.Name(f"smtp@{HOSTNAME}", gssapi.NameType.hostbased_service),
        usage="initiate")
    step = GSSAPI(missing).start(ctx.step())
    assert isinstance(step, Failure) and (step.code, step.enhanced) == (454, "4.7.0")
