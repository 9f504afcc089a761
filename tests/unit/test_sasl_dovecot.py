"""The Dovecot auth-protocol client on its own (appliance/clients/dovecot.py), against
the real private Dovecot of tests/dovecot_fixture.py: one shared connection,
requests multiplexed by id, cancelled requests, Dovecot down."""

from __future__ import annotations

import gc
import shutil
import time

import pytest

from appliance.clients.dovecot import (
    RETRY_AFTER,
    DovecotAuth,
    DovecotMechanism,
    escape,
    parse_socket,
    request_params,
    unescape,
)
from appliance.sasl import CredentialsBackend, Failure, SASLOptions, Success
from tests.dovecot_fixture import PASSWORD, USER

OPTIONS = SASLOptions(backend=CredentialsBackend(), hostname="mx.test.example")
needs_dovecot = pytest.mark.skipif(
    not (shutil.which("dovecot") or shutil.which("/usr/sbin/dovecot")),
    reason="dovecot (Debian dovecot-core) not installed")


def mechanism(client: DovecotAuth, name: str) -> DovecotMechanism:
    params = request_params(remote_ip="192.0.2.7", local_ip="127.0.0.1", secured=True,
                            penalty=False)
    return DovecotMechanism(OPTIONS, client=client, name=name, params=params)


@pytest.mark.parametrize(("spec", "expected"), [
    ("unix:/run/dovecot/auth-client", "/run/dovecot/auth-client"),
    ("inet:127.0.0.1:12345", ("127.0.0.1", 12345)),
    ("inet:[::1]:12345", ("::1", 12345)),
    ("inet:dovecot.example:1", ("dovecot.example", 1)),
])
def test_socket_spec(spec, expected):
    assert parse_socket(spec)[1] == expected


@pytest.mark.parametrize("spec", ["", "/run/dovecot/auth-client", "unix:relative",
                                  "inet:127.0.0.1", "inet:127.0.0.1:0",
                                  "inet:127.0.0.1:65536", "inet::12345", "tcp:1.2.3.4:5"])
def test_bad_socket_spec(spec):
    with pytest.raises(ValueError):
        parse_socket(spec)


def test_tab_escaping_round_trip():
    value = "a\tb\nc\rd\x01e\0f"
    assert "\t" not in escape(value) and "\n" not in escape(value)
    assert unescape(escape(value)) == value


def test_no_penalty_and_secured_parameters():
    assert "no-penalty" in request_params(penalty=False)
    assert "no-penalty" not in request_params()
    assert "secured" in request_params(secured=True)
    assert "secured" not in request_params()
    assert request_params(local_name="mx\tx")[2] == "local_name=mx\x01tx"


@needs_dovecot
def test_interleaved_exchanges_share_one_connection(dovecot):
    client = DovecotAuth(dovecot.unix, timeout=5)
    try:
        a, b = mechanism(client, "LOGIN"), mechanism(client, "LOGIN")
        assert a.start(None).data == b"Username:"
        assert b.start(None).data == b"Username:"
        assert b.respond(b"mallory").data == b"Password:"
        assert a.respond(USER.encode()).data == b"Password:"
        assert a._conn is b._conn and a._id != b._id
        assert isinstance(b.respond(PASSWORD.encode()), Failure)
        assert a.respond(PASSWORD.encode()) == Success(identity=USER, authcid=USER)
    finally:
        client.close()


@needs_dovecot
def test_an_abandoned_exchange_is_cancelled_and_the_connection_reused(dovecot):
    client = DovecotAuth(dovecot.inet, timeout=5)
    try:
        abandoned = mechanism(client, "LOGIN")
        assert abandoned.start(None).data == b"Username:"
        conn, request_id = abandoned._conn, abandoned._id
        del abandoned
        gc.collect()
        assert conn._cancelled == [request_id]
        m = mechanism(client, "PLAIN")
        assert m.start(f"\0{USER}\0{PASSWORD}".encode()) == Success(USER, USER)
        assert conn._cancelled == [] and conn.alive and m._conn is conn
    finally:
        client.close()


@needs_dovecot
def test_wrong_password_is_535_and_dovecot_down_is_454(dovecot):
    client = DovecotAuth(dovecot.inet, timeout=5)
    try:
        failed = mechanism(client, "PLAIN").start(f"\0{USER}\0wrong".encode())
        assert (failed.code, failed.enhanced, failed.user) == (535, "5.7.8", USER)
        announced = client.mechanisms()
        assert set(announced) == {"PLAIN", "LOGIN", "CRAM-MD5"}
        assert "plaintext" in announced["PLAIN"]
        dovecot.stop()
        down = mechanism(client, "PLAIN").start(f"\0{USER}\0{PASSWORD}".encode())
        assert (down.code, down.enhanced) == (454, "4.7.0")
        assert client.mechanisms() == announced  # the last announced list
        dovecot.start()
        time.sleep(RETRY_AFTER)  # failed connects are not retried before that
        up = mechanism(client, "PLAIN").start(f"\0{USER}\0{PASSWORD}".encode())
        assert up == Success(USER, USER)
    finally:
        client.close()


def test_never_reached_is_454_and_no_mechanism_list(tmp_path):
    client = DovecotAuth(f"unix:{tmp_path}/no-such-socket", timeout=1)
    assert client.mechanisms() is None
    failed = mechanism(client, "PLAIN").start(b"\0a\0b")
    assert (failed.code, failed.enhanced) == (454, "4.7.0")
    assert "no-such-socket" in failed.reason
    # a host that drops packets would make each attempt wait: retry only later
    first = client._failed
    assert mechanism(client, "PLAIN").start(b"\0a\0b").code == 454
    assert client._failed is first
