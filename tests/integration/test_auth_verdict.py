"""A plugin refusing a user at ``on_auth``, after the credentials were right: the
client gets the plugin's reply, the session stays unauthenticated, and a listener
that requires AUTH still refuses its mail."""

from __future__ import annotations

import base64
import json

import pytest

from appliance.users import make_entry, write_users

from .test_receive import MSG, connect, stored, talk

PASSWORD = "correct horse battery staple"


def plain(user: str) -> bytes:
    return b"AUTH PLAIN " + base64.b64encode(f"\0{user}\0{PASSWORD}".encode()) + b"\r\n"


@pytest.fixture
def app(make_appliance, tmp_path):
    users = tmp_path / "users.toml"
    write_users(users, {u: make_entry(u, PASSWORD, ["PLAIN"], "mx.test.example")
                        for u in ("alice", "mallory")})
    return make_appliance(f"""
        [auth]
        users_file = "{users}"
        plaintext_mechanisms = ["PLAIN"]
        [listeners.submission.auth]
        required = true
        [plugins.test-scripted]
        enabled = true
        [[plugins.test-scripted.rules]]
        event = "auth"
        match = "mallory"
        action = "reject"
        code = 554
        enhanced = "5.7.1"
        text = "mallory may not send through this server"
        """, listeners={"mta": {}, "submission": {}}, tls=False)


def test_refused_user_gets_the_plugins_reply_and_no_authenticated_mail(app):
    s = connect(app, app.ports["submission"])
    assert b"AUTH PLAIN" in talk(s, b"EHLO client.example\r\n")
    assert talk(s, plain("mallory")) == b"554 5.7.1 mallory may not send through this server\r\n"
    assert talk(s, b"MAIL FROM:<mallory@example.org>\r\n").startswith(b"530 5.7.0")
    # the same session may still authenticate as a user the plugin lets through
    assert talk(s, plain("alice")).startswith(b"235 2.7.0")
    assert talk(s, b"MAIL FROM:<alice@example.org>\r\n").startswith(b"250")
    s.close()
    successes = [line for line in app.log().splitlines() if " info auth session=" in line]
    assert len(successes) == 1 and " user=alice mechanism=PLAIN" in successes[0]
    assert "test-scripted reject 554 5.7.1 'mallory may not" in app.log()  # the trace


def test_refused_user_is_not_recorded_on_the_message(app):
    s = connect(app, app.ports["mta"])
    talk(s, b"EHLO client.example\r\n")
    assert talk(s, plain("mallory")).startswith(b"554 5.7.1")
    assert talk(s, b"MAIL FROM:<mallory@example.org>\r\n").startswith(b"250")
    assert talk(s, b"RCPT TO:<b@example.net>\r\n").startswith(b"250")
    assert talk(s, b"DATA\r\n").startswith(b"354")
    assert talk(s, MSG + b".\r\n").startswith(b"250 2.0.0 Ok: queued as")
    s.close()
    env, data = stored(app)
    assert env["client"]["auth_user"] is None
    assert b" with ESMTP id " in data  # not ESMTPA
    assert "mallory" not in json.dumps(env["client"])
