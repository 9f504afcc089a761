"""Relay and recipients end to end: the real server with the
built-in relay plugin, real sockets bound to different loopback addresses to vary
the client IP, a real users file for AUTH and the spool envelope on disk."""

from __future__ import annotations

import base64
import signal
import socket

import pytest

from appliance.users import make_entry, write_users

from .conftest import read_reply
from .test_access import wait_for_log
from .test_receive import stored, talk

PASSWORD = "correct horse battery staple"
RECIPIENTS = """\
# the test domain's people
alice@example.org
Bob@Example.org      folder=Projects
carol@example.org    folder=Support     # a comment after an entry
sales@example.org:   alice@example.org, bob@example.org
team@example.org:    sales@example.org, carol@example.org
boss@internal.example.org
@catchall.example:   carol@example.org
"""
MODES = ("nobody", "local-users", "local-domains", "anyone")


def message(sender: str = "alice@example.org", extra: str = "") -> bytes:
    return (f"From: {sender}\r\n{extra}To: someone@example.net\r\nSubject: relay test\r\n"
            "\r\nbody\r\n.\r\n").encode()


@pytest.fixture
def relay_app(make_appliance, tmp_path):
    """Local domains example.org (+ internal, + catch-all), one listener per
    allow_relay mode, AUTH PLAIN without TLS (a test convenience)."""
    (tmp_path / "recipients").write_text(RECIPIENTS)
    users = tmp_path / "users.toml"
    write_users(users, {name: make_entry(name, PASSWORD, ["PLAIN"], "mx.test.example")
                        for name in ("alice@example.org", "dave@example.net")})
    listeners = {mode: {} for mode in MODES} | {"noauth": {}}
    extra = f"""
        [auth]
        users_file = "{users}"
        plaintext_mechanisms = ["PLAIN"]
        failure_delay = "0s"
        [relay]
        local_domains = ["example.org", "Internal.Example.org", "catchall.example"]
        recipients_file = "{tmp_path / 'recipients'}"
        relay_networks = ["127.0.0.1", "127.0.0.5-127.0.0.6"]
        require_auth_for_local = ["internal.example.org"]
        [listeners.noauth.relay]
        relay_authenticated = false
    """
    for mode in MODES:
        extra += f'[listeners.{mode}.relay]\nallow_relay = "{mode}"\n'
    return make_appliance(extra, listeners=listeners)


def session(app, listener="local-domains", source="127.0.0.2", user=None, ehlo=True):
    s = socket.create_connection(("127.0.0.1", app.ports[listener]), timeout=10,
                                 source_address=(source, 0))
    assert read_reply(s).startswith(b"220 ")
    if ehlo:
        assert talk(s, b"EHLO client.example\r\n").startswith(b"250")
    if user:
        token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode())
        assert talk(s, b"AUTH PLAIN " + token + b"\r\n").startswith(b"235 2.7.0")
    return s


def rcpt(s, address: str, sender: str = "someone@example.com") -> bytes:
    """A fresh transaction with one RCPT; its reply."""
    talk(s, b"RSET\r\n")
    assert talk(s, f"MAIL FROM:<{sender}>\r\n".encode()).startswith(b"250")
    return talk(s, f"RCPT TO:<{address}>\r\n".encode())


def send(s, sender: str, recipients: list[str], data: bytes) -> bytes:
    assert talk(s, f"MAIL FROM:<{sender}>\r\n".encode()).startswith(b"250")
    for r in recipients:
        assert talk(s, f"RCPT TO:<{r}>\r\n".encode()).startswith(b"250"), r
    assert talk(s, b"DATA\r\n").startswith(b"354")
    return talk(s, data)


# --- who may relay -------------------------------------------------------------

# (mode, client, authenticated) -> may relay to example.net
EXPECTED = {
    "nobody": (False, False, False),
    "local-users": (False, False, True),
    "local-domains": (False, True, True),
    "anyone": (True, True, True),
}


@pytest.mark.parametrize("mode", MODES)
def test_allow_relay_modes(relay_app, mode):
    stranger, network, authenticated = EXPECTED[mode]
    for (source, user), allowed in (
        (("127.0.0.2", None), stranger),
        (("127.0.0.1", None), network),
        (("127.0.0.2", "alice@example.org"), authenticated),
    ):
        s = session(relay_app, mode, source, user)
        reply = rcpt(s, "someone@example.net")
        if allowed:
            assert reply.startswith(b"250 2.1.5"), (source, user, reply)
        else:
            assert reply == b"554 5.7.1 <someone@example.net>: Relay access denied\r\n", \
                (source, user, reply)
        # Local delivery is never relaying: accepted in every mode, from anyone.
        assert rcpt(s, "alice@example.org").startswith(b"250 2.1.5")
        s.close()


def test_bare_postmaster_is_always_accepted(relay_app):
    s = session(relay_app, "nobody")  # RFC 5321 4.5.1, even where nobody relays
    assert rcpt(s, "Postmaster").startswith(b"250 2.1.5")
    assert rcpt(s, "postmaster@example.net").startswith(b"554 5.7.1")


def test_relay_networks_range_and_exact_boundary(relay_app):
    for source, allowed in (("127.0.0.4", False), ("127.0.0.5", True), ("127.0.0.6", True),
                            ("127.0.0.7", False)):
        s = session(relay_app, source=source)
        assert rcpt(s, "x@example.net")[:3] == (b"250" if allowed else b"554"), source
        s.close()


def test_relay_authenticated_off_refuses_an_authenticated_user(relay_app):
    s = session(relay_app, "noauth", user="alice@example.org")
    assert rcpt(s, "x@example.net").startswith(b"554 5.7.1")
    s = session(relay_app, "noauth", source="127.0.0.1")  # the network still relays
    assert rcpt(s, "x@example.net").startswith(b"250")


def test_relay_refusal_then_same_session_and_others_still_served(relay_app):
    s = session(relay_app)
    assert rcpt(s, "a@example.net").startswith(b"554 5.7.1")
    assert rcpt(s, "nobody@example.org").startswith(b"550 5.1.1")
    assert talk(s, b"RSET\r\n").startswith(b"250")
    assert send(s, "x@example.com", ["alice@example.org"], message()).startswith(b"250 2.0.0")
    other = session(relay_app, source="127.0.0.3")
    assert send(other, "y@example.com", ["carol@example.org"], message()).startswith(b"250")
    assert len(relay_app.queued()) == 2


# --- local recipients, aliases, folders --------------------------------------------

def test_unknown_local_recipient_550_5_1_1(relay_app):
    s = session(relay_app)
    assert rcpt(s, "mallory@example.org") == \
        b"550 5.1.1 <mallory@example.org>: Recipient address rejected: User unknown\r\n"
    assert rcpt(s, "ALICE@EXAMPLE.ORG").startswith(b"250 2.1.5")  # case-insensitive


def test_alias_expansion_and_folders_in_the_spool_envelope(relay_app):
    s = session(relay_app)
    reply = send(s, "x@example.com", ["team@example.org", "BOB@example.org"], message())
    assert reply.startswith(b"250 2.0.0")
    env, _ = stored(relay_app)
    got = [(r["address"], r["folder"]) for r in env["recipients"]]
    # team -> sales (alice, bob) + carol; bob given again is not added twice;
    # the file's spelling is what goes to the envelope.
    assert got == [("alice@example.org", "INBOX"), ("Bob@Example.org", "Projects"),
                   ("carol@example.org", "Support")]


def test_catch_all_takes_unknown_recipients_of_its_domain(relay_app):
    s = session(relay_app)
    assert send(s, "x@example.com", ["whoever@catchall.example"], message()).startswith(
        b"250 2.0.0")
    env, _ = stored(relay_app)
    assert [(r["address"], r["folder"]) for r in env["recipients"]] == [
        ("carol@example.org", "Support")]


# --- authentication for local delivery ----------------------------------------------

def test_require_auth_for_a_local_domain(relay_app):
    s = session(relay_app)
    assert rcpt(s, "boss@internal.example.org") == (
        b"530 5.7.0 <boss@internal.example.org>: Authentication required for delivery"
        b" to internal.example.org\r\n")
    assert rcpt(s, "alice@example.org").startswith(b"250")  # other domains unaffected
    s = session(relay_app, user="alice@example.org")
    assert rcpt(s, "boss@internal.example.org").startswith(b"250 2.1.5")


# --- require auth match ---------------------------------------------------------------

@pytest.fixture
def match_app(make_appliance, tmp_path):
    users = tmp_path / "users.toml"
    write_users(users, {"alice@example.org": make_entry("alice@example.org", PASSWORD,
                                                        ["PLAIN"], "mx.test.example")})

    def make(mode: str, headers: bool):
        return make_appliance(f"""
            [auth]
            users_file = "{users}"
            plaintext_mechanisms = ["PLAIN"]
            [relay]
            local_domains = ["example.org"]
            check_recipients = false
            require_auth_match = "{mode}"
            auth_match_headers = {str(headers).lower()}
        """, listeners={"local-domains": {}})
    return make


def test_auth_match_address_at_mail_from(match_app):
    app = match_app("address", False)
    s = session(app, user="alice@example.org")
    assert talk(s, b"MAIL FROM:<bob@example.org>\r\n") == (
        b"550 5.7.1 <bob@example.org>: Sender address not owned by user alice@example.org\r\n")
    # without the header check, a foreign From: passes
    assert send(s, "Alice@Example.org", ["x@example.net"],
                message("someone@else.example")).startswith(b"250 2.0.0")
    # an unauthenticated client is not concerned (it may only send locally anyway)
    s = session(app, source="127.0.0.1")
    assert talk(s, b"MAIL FROM:<bob@example.org>\r\n").startswith(b"250")


def test_auth_match_domain_at_mail_from(match_app):
    app = match_app("domain", False)
    s = session(app, user="alice@example.org")
    assert talk(s, b"MAIL FROM:<bob@example.com>\r\n").startswith(b"550 5.7.1")
    assert talk(s, b"MAIL FROM:<bob@example.org>\r\n").startswith(b"250")


def test_auth_match_address_with_headers(match_app):
    app = match_app("address", True)
    s = session(app, user="alice@example.org")
    refused = send(s, "alice@example.org", ["x@example.net"], message("bob@example.org"))
    assert refused == b"550 5.7.1 From:/Sender: header not owned by user alice@example.org\r\n"
    # Sender: names the user: accepted (SmarterMail: From or Sender)
    ok = send(s, "alice@example.org", ["x@example.net"],
              message("Bob <bob@example.org>", "Sender: Alice <alice@example.org>\r\n"))
    assert ok.startswith(b"250 2.0.0")
    assert send(s, "alice@example.org", ["x@example.net"],
                message("Alice <ALICE@example.org>")).startswith(b"250 2.0.0")
    assert len(app.queued()) == 2


def test_auth_match_domain_with_headers(match_app):
    app = match_app("domain", True)
    s = session(app, user="alice@example.org")
    assert send(s, "bob@example.org", ["x@example.net"],
                message("carol@example.org")).startswith(b"250 2.0.0")
    # a Sender: outside the domain refuses even with a good From:
    assert send(s, "bob@example.org", ["x@example.net"],
                message("carol@example.org", "Sender: eve@evil.example\r\n")).startswith(
        b"550 5.7.1")
    assert send(s, "bob@example.org", ["x@example.net"],
                message("eve@evil.example")).startswith(b"550 5.7.1")
    assert talk(s, b"NOOP\r\n").startswith(b"250")


# --- VRFY and EXPN ------------------------------------------------------------------

def test_vrfy_and_expn_off_by_default(relay_app):
    s = session(relay_app)
    assert talk(s, b"VRFY alice@example.org\r\n").startswith(b"252 2.5.2")
    assert talk(s, b"VRFY mallory@example.org\r\n").startswith(b"252 2.5.2")
    assert talk(s, b"EXPN sales@example.org\r\n").startswith(b"502 5.5.1")


def test_vrfy_and_expn_on_answer_from_the_recipients_file(make_appliance, tmp_path):
    (tmp_path / "recipients").write_text(RECIPIENTS)
    app = make_appliance(f"""
        [smtp]
        vrfy = true
        expn = true
        [relay]
        local_domains = ["example.org", "example.com"]
        recipients_file = "{tmp_path / 'recipients'}"
    """, listeners={"local-domains": {}})
    s = session(app)
    assert talk(s, b"VRFY <bob@example.org>\r\n") == b"250 2.1.5 <Bob@Example.org>\r\n"
    assert talk(s, b"VRFY carol\r\n") == b"250 2.1.5 <carol@example.org>\r\n"
    assert talk(s, b"VRFY mallory@example.org\r\n").startswith(b"550 5.1.1")
    assert talk(s, b"VRFY someone@example.net\r\n").startswith(b"252 2.5.2")  # not ours
    assert talk(s, b"EXPN team@example.org\r\n") == (
        b"250-2.1.5 <alice@example.org>\r\n250-2.1.5 <Bob@Example.org>\r\n"
        b"250 2.1.5 <carol@example.org>\r\n")
    assert talk(s, b"EXPN alice@example.org\r\n") == b"250 2.1.5 <alice@example.org>\r\n"
    assert talk(s, b"EXPN nolist@example.org\r\n").startswith(b"550 5.1.1")
    assert talk(s, b"NOOP\r\n").startswith(b"250")


# --- refused recipients count towards [flow.bad_recipients] -----------------------

def test_too_many_unknown_recipients_then_421_and_others_served(make_appliance, tmp_path):
    (tmp_path / "recipients").write_text(RECIPIENTS)
    app = make_appliance(f"""
        [flow]
        exempt_networks = []
        [flow.bad_recipients]
        limit = 3
        [relay]
        local_domains = ["example.org"]
        recipients_file = "{tmp_path / 'recipients'}"
    """)
    s = session(app, listener="mta")
    assert talk(s, b"MAIL FROM:<x@example.com>\r\n").startswith(b"250")
    for i in range(2):
        assert talk(s, f"RCPT TO:<u{i}@example.org>\r\n".encode()).startswith(b"550 5.1.1")
    # the third (the limit) is answered, then 421 and the close at once
    s.sendall(b"RCPT TO:<u9@example.org>\r\n")
    last = b""
    while chunk := s.recv(1000):
        last += chunk
    assert last.startswith(b"550 5.1.1") and b"\r\n421 4.7.0 " in last, last
    other = session(app, listener="mta", source="127.0.0.3")
    assert rcpt(other, "alice@example.org").startswith(b"250 2.1.5")


# --- config errors ----------------------------------------------------------------------

@pytest.mark.parametrize(("content", "expected"), [
    ("alice@example.org\nalice@EXAMPLE.org\n", ":2: expected each address once"),
    ("ok@example.org\n\nnot-an-address\n", ":3: expected an address local@domain"),
    ("a@example.org folder\n", ":1: expected folder=NAME"),
    ("list@example.org: a@example.org\n", ":1: expected members that are mailboxes"),
    ("x@example.org: y@example.org\ny@example.org: x@example.org\n",
     ":1: expected aliases without a loop"),
    ("list@example.org:\n", ":1: expected one or more member addresses"),
])
def test_bad_recipients_file_is_a_config_error_naming_file_and_line(
        make_appliance, tmp_path, content, expected):
    path = tmp_path / "recipients"
    path.write_text(content)
    app = make_appliance(f'[relay]\nrecipients_file = "{path}"\n', start=False)
    result = app.cli("check-config")
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "relay.recipients_file" in out and f"{path}{expected}" in out, out


# --- the lookup_recipient hook and reloads ----------------------------------------------

def test_a_directory_plugin_answers_recipients_the_file_does_not_know(make_appliance,
                                                                       tmp_path):
    """tests/fixture_plugins' test-directory stands for an LDAP plugin (no LDAP
    server in the tests): it implements lookup_recipient from its own table."""
    (tmp_path / "recipients").write_text("alice@example.org\n")
    app = make_appliance(f"""
        [relay]
        local_domains = ["example.org"]
        recipients_file = "{tmp_path / 'recipients'}"
        [plugins.test-directory]
        enabled = true
        mailboxes = {{ "Dir@example.org" = "Directory" }}
    """)
    s = session(app, listener="mta")
    assert rcpt(s, "nobody@example.org").startswith(b"550 5.1.1")  # neither knows it
    talk(s, b"RSET\r\n")
    assert send(s, "x@example.com", ["dir@example.org", "alice@example.org"],
                message()).startswith(b"250 2.0.0")
    env, _ = stored(app)
    assert [(r["address"], r["folder"]) for r in env["recipients"]] == [
        ("Dir@example.org", "Directory"), ("alice@example.org", "INBOX")]


def test_a_failing_directory_gives_451_never_550(make_appliance):
    app = make_appliance("""
        [relay]
        local_domains = ["example.org"]
        relay_networks = ["127.0.0.1"]
        [plugins.test-directory]
        enabled = true
        down = true
    """)
    s = session(app, listener="mta")
    assert rcpt(s, "alice@example.org") == \
        b"451 4.3.0 Recipient lookup unavailable, try again later\r\n"
    assert rcpt(s, "x@example.net").startswith(b"554 5.7.1")  # relaying: no lookup
    assert "recipient_lookup_failed" in app.log()
    other = session(app, listener="mta", source="127.0.0.1")
    assert rcpt(other, "x@example.net").startswith(b"250")


def test_recipients_file_is_reread_on_reload_and_a_bad_one_refused(make_appliance,
                                                                     tmp_path):
    path = tmp_path / "recipients"
    path.write_text("alice@example.org\n")
    app = make_appliance(f"""
        [relay]
        local_domains = ["example.org"]
        recipients_file = "{path}"
    """)
    s = session(app, listener="mta")
    assert rcpt(s, "new@example.org").startswith(b"550 5.1.1")
    path.write_text("alice@example.org\nnew@example.org folder=New\n")
    app.signal(signal.SIGHUP)
    wait_for_log(app, "reloaded")
    s = session(app, listener="mta")
    assert rcpt(s, "new@example.org").startswith(b"250 2.1.5")
    path.write_text("alice@example.org\nnew@example.org folder\n")
    app.signal(signal.SIGHUP)
    wait_for_log(app, "reload_refused")
    assert f"{path}:2: expected folder=NAME" in app.log()
    s = session(app, listener="mta")
    assert rcpt(s, "new@example.org").startswith(b"250 2.1.5")  # the old table stays


def test_local_domains_file_and_relay_networks_file(make_appliance, tmp_path):
    (tmp_path / "domains").write_text("# ours\nexample.org\n\nExample.COM  # second\n")
    (tmp_path / "networks").write_text("127.0.0.9\n")
    app = make_appliance(f"""
        [relay]
        local_domains_file = "{tmp_path / 'domains'}"
        relay_networks = []
        relay_networks_file = "{tmp_path / 'networks'}"
        check_recipients = false
    """)
    s = session(app, listener="mta", source="127.0.0.8")
    assert rcpt(s, "anyone@example.com").startswith(b"250 2.1.5")  # local, not checked
    assert rcpt(s, "anyone@example.net").startswith(b"554 5.7.1")
    s = session(app, listener="mta", source="127.0.0.9")
    assert rcpt(s, "anyone@example.net").startswith(b"250 2.1.5")
    s = session(app, listener="mta", source="127.0.0.1")  # loopback not listed now
    assert rcpt(s, "anyone@example.net").startswith(b"554 5.7.1")


def test_bad_local_domains_file_names_file_and_line(make_appliance, tmp_path):
    path = tmp_path / "domains"
    path.write_text("example.org\nnot a domain\n")
    app = make_appliance(f'[relay]\nlocal_domains_file = "{path}"\n', start=False)
    result = app.cli("check-config")
    assert result.returncode != 0
    assert (f'relay.local_domains_file: invalid value ({path}:2: expected a domain name'
            f' (example.org) (got "not a domain"))') in result.stdout + result.stderr
