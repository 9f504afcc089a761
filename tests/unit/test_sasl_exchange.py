"""The RFC 4954 side shared by all mechanisms: base64, "=", "*", line length,
additional data with success, backends that fail, the registry."""

# ruff: noqa: F811  (pytest fixtures imported from sasl_harness are parameters here)

from __future__ import annotations

import base64
import importlib.util
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from attrs import evolve

from appliance.sasl import (
    MECHANISMS,
    AuthExchange,
    CredentialsBackend,
    MechanismTooWeak,
    SASLOptions,
    ThreadedBackend,
    create,
)
from appliance.sasl.exchange import MAX_LINE, AuthReply
from appliance.users import UsersFile

from .sasl_harness import (  # noqa: F401 (fixtures)
    ALICE,
    ALICE_PW,
    HOSTNAME,
    backend,
    options,
    run,
    users_path,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_registry():
    # GSSAPI is registered only when python-gssapi imports (the gssapi extra)
    gssapi = ["GSSAPI"] if importlib.util.find_spec("gssapi") else []
    assert sorted(MECHANISMS) == sorted(["CRAM-MD5", "DIGEST-MD5", "LOGIN", "OAUTHBEARER",
                                         "PLAIN", "SCRAM-SHA-256", "XOAUTH2", *gssapi])
    assert [n for n, m in MECHANISMS.items() if m.plaintext] == ["PLAIN", "LOGIN"]
    assert {n for n, m in MECHANISMS.items() if not m.client_first} == {"CRAM-MD5", "DIGEST-MD5"}
    opts = SASLOptions(backend=CredentialsBackend(), hostname=HOSTNAME)
    assert create("scram-sha-256", opts).name == "SCRAM-SHA-256"
    with pytest.raises(KeyError):
        create("NTLM", opts)


def test_reply_rendering():
    assert AuthReply(334, None, "").render() == b"334 \r\n"
    assert AuthReply(235, "2.7.0", "Authentication successful").render() == \
        b"235 2.7.0 Authentication successful\r\n"


def test_equals_sign_is_an_empty_initial_response(options):
    replies, exchange = run(options, "LOGIN", "=")
    assert replies == [b"334 UGFzc3dvcmQ6\r\n"]  # the empty user name was taken
    assert exchange.mechanism.user == ""


def test_line_length_limit_is_12288_octets_with_crlf(options):
    """RFC 4954 section 4: 12286 characters plus CRLF pass, one more does not."""
    ok, _ = run(options, "LOGIN", None, "A" * (MAX_LINE - 2))
    # 12286 characters are not base64 (not a multiple of 4): refused as such, not as too long.
    assert ok[-1] == b"501 5.5.2 Cannot decode base64 response\r\n"
    too_long, exchange = run(options, "LOGIN", None, "A" * (MAX_LINE - 1))
    assert too_long[-1] == b"500 5.5.6 Authentication exchange line is too long\r\n"
    assert exchange.done
    user = "u" * 9213  # base64: 12284 characters, a legal line
    replies, _ = run(options, "LOGIN", None, b64(user))
    assert replies[-1] == b"334 UGFzc3dvcmQ6\r\n"


def test_base64_is_decoded_strictly(options):
    good = b64(f"\0{ALICE}\0{ALICE_PW}")
    for bad in (good + "\n", good[:-1], " " + good, good.replace("A", "-")):
        replies, _ = run(options, "PLAIN", None, bad)
        assert replies[-1] == b"501 5.5.2 Cannot decode base64 response\r\n", bad
    assert run(options, "PLAIN", good)[0] == [b"235 2.7.0 Authentication successful\r\n"]


def test_missing_users_file_gives_454(tmp_path):
    opts = SASLOptions(backend=UsersFile(tmp_path / "absent.toml"), hostname=HOSTNAME)
    for mechanism, line in (("PLAIN", b64(f"\0{ALICE}\0{ALICE_PW}")),
                            ("SCRAM-SHA-256", b64(f"n,,n={ALICE},r=abc"))):
        replies, exchange = run(opts, mechanism, line)
        assert replies == [b"454 4.7.0 Temporary authentication failure\r\n"]
        assert "absent.toml" in exchange.result.reason


def test_a_backend_may_call_the_mechanism_too_weak(options):
    class Picky(CredentialsBackend):
        def verify_password(self, user, password):
            raise MechanismTooWeak

    replies, _ = run(evolve(options, backend=Picky()), "PLAIN", b64("\0a\0b"))
    assert replies == [b"534 5.7.9 Authentication mechanism is too weak\r\n"]


def test_threaded_backend_runs_each_call_in_the_pool(options, backend):
    seen = []

    class Recording(CredentialsBackend):
        def verify_password(self, user, password):
            seen.append(threading.get_ident())
            return backend.verify_password(user, password)

        def scram_keys(self, user, mechanism):
            seen.append(threading.get_ident())
            return backend.scram_keys(user, mechanism)

    with ThreadPoolExecutor(1) as pool:
        threaded = ThreadedBackend(Recording(), lambda fn, *a: pool.submit(fn, *a).result())
        opts = evolve(options, backend=threaded)
        assert run(opts, "PLAIN", b64(f"\0{ALICE}\0{ALICE_PW}"))[1].result.identity == ALICE
        assert run(opts, "SCRAM-SHA-256", b64(f"n,,n={ALICE},r=abc"))[0][0].startswith(b"334")
    assert len(seen) == 2 and threading.get_ident() not in seen


def test_failure_carries_the_user_for_the_log_but_not_the_password(options):
    _, exchange = run(options, "PLAIN", b64(f"\0{ALICE}\0secret-guess"))
    failure = exchange.result
    assert failure.reply == "535 5.7.8 Authentication credentials invalid"
    assert failure.user == ALICE
    assert "secret-guess" not in repr(failure)


def test_an_unfinished_exchange_is_simply_abandoned(options):
    exchange = AuthExchange(create("LOGIN", options))
    exchange.start(None)
    assert not exchange.done and exchange.result is None
