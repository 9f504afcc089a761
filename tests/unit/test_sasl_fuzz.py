"""Whatever a client sends, every mechanism answers with a reply and never raises.

The backend knows no users (PLAIN would otherwise run argon2 for every example):
this is about parsing; the users file path is tested with real clients elsewhere.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.sasl import (
    MECHANISMS,
    AuthExchange,
    Challenge,
    CredentialsBackend,
    Failure,
    SASLOptions,
    Success,
    create,
)

CODES = {235, 334, 454, 500, 501, 534, 535}
OPTIONS = SASLOptions(backend=CredentialsBackend(), hostname="mx.example.org",
                      verify_token=lambda user, token: None)


@pytest.mark.parametrize("mechanism", sorted(MECHANISMS))
@settings(max_examples=150, deadline=None)
@given(initial=st.one_of(st.none(), st.binary(max_size=300)),
       answers=st.lists(st.binary(max_size=300), max_size=3))
def test_random_data_gets_a_step(mechanism, initial, answers):
    mech = create(mechanism, OPTIONS)
    step = mech.start(initial)
    for data in answers:
        assert isinstance(step, Challenge | Success | Failure)
        if not isinstance(step, Challenge):
            break
        step = mech.respond(data)
    assert not isinstance(step, Success)  # nobody exists
    if isinstance(step, Failure):
        assert step.code in CODES and step.enhanced


@pytest.mark.parametrize("mechanism", sorted(MECHANISMS))
@settings(max_examples=100, deadline=None)
@given(lines=st.lists(st.one_of(
    st.text(max_size=80),
    st.binary(max_size=120).map(lambda b: base64.b64encode(b).decode()),
    st.sampled_from(["*", "=", "", "===="])), min_size=1, max_size=4))
def test_random_lines_get_an_smtp_reply(mechanism, lines):
    exchange = AuthExchange(create(mechanism, OPTIONS))
    reply = exchange.start(lines[0] if lines[0] else None)
    for line in lines[1:]:
        if exchange.done:
            break
        assert reply.code == 334
        reply = exchange.line(line)
    assert reply.code in CODES
    assert reply.render().endswith(b"\r\n")
