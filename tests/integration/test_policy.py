"""Postfix policy delegation through the real server: a real postgrey greylists,
and policy servers that are down, hang or close get each server's default action
within its timeout while other sessions are served.

The action grammar is exercised against a small policy server written here
(``ScriptedPolicyServer``, a real TCP server in a thread): no Debian policy server
answers every action of access(5) on demand. postgrey is the real one.
"""

from __future__ import annotations

import json
import smtplib
import socket
import socketserver
import threading
import time

import pytest

from tests.integration.conftest import Appliance
from tests.peers import free_port
from tests.postgrey_fixture import DELAY

MESSAGE = b"From: a@sender.example\r\nSubject: policy test\r\n\r\nHello.\r\n"

# Recipient local part -> the scripted server's action at RCPT.
ACTIONS = {
    "ok": "OK",
    "reject": "REJECT Not wanted here",
    "code5": "550 5.1.1 No such user here",
    "code4": "452 Slow down",
    "defer": "DEFER_IF_PERMIT Service busy",
    "prepend": "PREPEND X-Policy: checked by script",
    "hold": "HOLD suspicious",
    "discard": "DISCARD",
    "redirect": "REDIRECT postmaster@rcpt.example",
    "bcc": "BCC archive@rcpt.example",
    "bogus": "FROBNICATE now",
}


class ScriptedPolicyServer(socketserver.ThreadingTCPServer):
    """Answers each request by its recipient's local part (``ACTIONS``), DUNNO
    otherwise; records every request and counts connections."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.requests: list[dict[str, str]] = []
        self.connections = 0

    @property
    def address(self) -> str:
        return f"inet:127.0.0.1:{self.server_address[1]}"


class _ScriptedHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.server.connections += 1
        attrs: dict[str, str] = {}
        for raw in self.rfile:
            line = raw.decode().rstrip("\n")
            if line:
                name, _, value = line.partition("=")
                attrs[name] = value
                continue
            self.server.requests.append(attrs)
            local = attrs.get("recipient", "").partition("@")[0]
            state = attrs["protocol_state"]
            action = "DUNNO"
            if state == "RCPT":
                action = ACTIONS.get(local, "DUNNO")
            elif state == "END-OF-MESSAGE" and local == "late":
                action = "PREPEND X-Late: end of data"
            self.wfile.write(f"action={action}\n\n".encode())
            attrs = {}


class SilentServer:
    """A policy server that accepts connections and then either never answers
    (``hang``) or reads the request and closes (``close``)."""

    def __init__(self, behaviour: str) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.behaviour = behaviour
        self.address = f"inet:127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.behaviour == "close":
                conn.recv(65536)
                conn.close()
            else:
                self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture(scope="module")
def peers():
    scripted = ScriptedPolicyServer()
    threading.Thread(target=scripted.serve_forever, daemon=True).start()
    hang, close = SilentServer("hang"), SilentServer("close")
    yield {"scripted": scripted, "hang": hang, "close": close, "down": free_port()}
    scripted.shutdown()
    scripted.server_close()
    hang.close()
    close.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, certs, peers, postgrey):
    """One appliance; each listener asks other policy servers."""
    s = peers["scripted"]
    extra = f"""
        [[listeners.script.policy.servers]]
        name = "script"
        address = "{s.address}"
        stages = ["connect", "ehlo", "mail", "rcpt", "data", "end_of_data"]
        policy_context = "test"

        [[listeners.grey.policy.servers]]
        name = "postgrey"
        address = "{postgrey.address}"

        [[listeners.down.policy.servers]]
        name = "down"
        address = "inet:127.0.0.1:{peers["down"]}"
        default_action = "tmpreject"

        [[listeners.hang.policy.servers]]
        name = "hang"
        address = "{peers["hang"].address}"
        timeout = "1s"
        default_action = "reject"

        [[listeners.close.policy.servers]]
        name = "close"
        address = "{peers["close"].address}"
        default_action = "continue"
    """
    root = tmp_path_factory.mktemp("policy")
    names = ("script", "grey", "down", "hang", "close")
    app = Appliance(root, extra, {n: {} for n in names}, certs[:2]).start()
    yield app
    app.stop()


def send(port: int, rcpt: str, sender: str = "a@sender.example",
         helo: str = "client.test") -> tuple[int, bytes, smtplib.SMTP]:
    """MAIL and RCPT; returns RCPT's (code, text) and the open client."""
    client = smtplib.SMTP("127.0.0.1", port, local_hostname=helo, timeout=10)
    client.ehlo()
    code, text = client.mail(sender)
    assert code == 250, text
    code, text = client.rcpt(rcpt)
    return code, text, client


def deliver(port: int, rcpt: str, **kw) -> tuple[int, bytes]:
    code, text, client = send(port, rcpt, **kw)
    assert code == 250, text
    result = client.data(MESSAGE)
    client.quit()
    return result


def queued_file(app: Appliance, reply: bytes, suffix: str) -> bytes:
    """The spooled message (``.msg``) or envelope (``.json``) of a 250 reply."""
    queue_id = reply.decode().rsplit(" ", 1)[-1]
    return (app.spool / "queue" / f"{queue_id}{suffix}").read_bytes()


# --- postgrey, the real greylisting policy server -------------------------------------


def test_postgrey_defers_the_first_attempt_and_accepts_the_retry(server):
    port = server.ports["grey"]
    code, text, client = send(port, "greylisted@rcpt.example")
    assert code == 450
    # postgrey sends "DEFER_IF_PERMIT 4.2.0 Greylisted, ..." (its own enhanced code)
    assert text.startswith(b"4.2.0 Greylisted, see http://postgrey")
    client.quit()
    code, text, client = send(port, "greylisted@rcpt.example")  # too soon
    assert code == 450, text
    client.quit()
    time.sleep(DELAY + 0.6)
    code, text = deliver(port, "greylisted@rcpt.example")
    assert code == 250, text
    message = queued_file(server, text, ".msg")
    # postgrey's PREPEND on the accepted retry: the header is on top of the message
    assert message.startswith(b"X-Greylist: delayed ")
    assert b"by postgrey" in message.split(b"\r\n", 1)[0]


# --- the action grammar -------------------------------------------------------------------


@pytest.mark.parametrize("local, code, reply", [
    ("reject", 554, b"5.7.1 Not wanted here"),
    ("code5", 550, b"5.1.1 No such user here"),
    ("code4", 452, b"4.7.1 Slow down"),
    ("defer", 450, b"4.7.1 Service busy"),
    ("bogus", 451, b"4.3.0 Policy server unavailable, try again later"),
])
def test_refusing_actions(server, local, code, reply):
    got, text, client = send(server.ports["script"], f"{local}@rcpt.example")
    assert (got, text) == (code, reply)
    assert client.noop()[0] == 250  # the session goes on
    client.quit()


def test_unknown_action_is_logged(server):
    send(server.ports["script"], "bogus@rcpt.example")[2].quit()
    assert 'policy_bad_action' in server.log()
    assert 'action="FROBNICATE now"' in server.log()


def test_prepend_adds_the_header_to_the_message(server):
    code, text = deliver(server.ports["script"], "prepend@rcpt.example")
    assert code == 250, text
    message = queued_file(server, text, ".msg")
    assert message.startswith(b"X-Policy: checked by script\r\nReceived: ")


def test_hold_quarantines_the_message(server):
    code, text = deliver(server.ports["script"], "hold@rcpt.example")
    assert code == 250, text
    env = json.loads(queued_file(server, text, ".json"))
    assert env["quarantine"] == "suspicious"


def test_discard_accepts_and_stores_nothing(server):
    before = len(server.queued())
    code, text = deliver(server.ports["script"], "discard@rcpt.example")
    assert code == 250, text
    assert len(server.queued()) == before


def test_redirect_replaces_the_recipients(server):
    code, text, client = send(server.ports["script"], "someone@rcpt.example")
    assert code == 250
    assert client.rcpt("redirect@rcpt.example")[0] == 250
    code, text = client.data(MESSAGE)
    client.quit()
    assert code == 250, text
    env = json.loads(queued_file(server, text, ".json"))
    assert [r["address"] for r in env["recipients"]] == ["postmaster@rcpt.example"]


def test_bcc_adds_a_recipient(server):
    code, text = deliver(server.ports["script"], "bcc@rcpt.example")
    assert code == 250, text
    env = json.loads(queued_file(server, text, ".json"))
    assert [r["address"] for r in env["recipients"]] == ["bcc@rcpt.example",
                                                         "archive@rcpt.example"]


def test_prepend_at_end_of_data(server):
    code, text = deliver(server.ports["script"], "late@rcpt.example")
    assert code == 250, text
    assert queued_file(server, text, ".msg").startswith(b"X-Late: end of data\r\nReceived: ")


def test_ok_accepts(server):
    assert deliver(server.ports["script"], "ok@rcpt.example")[0] == 250


def test_postfix_attributes_one_instance_per_message_one_connection(server, peers):
    scripted = peers["scripted"]
    time.sleep(0.2)  # earlier tests' connections are back in the pool
    start, conns = len(scripted.requests), scripted.connections
    client = smtplib.SMTP("127.0.0.1", server.ports["script"], local_hostname="attrs.test",
                          timeout=10)
    client.ehlo()
    for _ in range(2):
        assert client.mail("sender@attrs.example", ["SIZE=100"])[0] == 250
        assert client.rcpt("first@rcpt.example")[0] == 250
        assert client.data(MESSAGE)[0] == 250
    client.quit()
    seen = scripted.requests[start:]
    states = [r["protocol_state"] for r in seen]
    assert states == ["CONNECT", "EHLO"] + ["MAIL", "RCPT", "DATA", "END-OF-MESSAGE"] * 2
    assert scripted.connections - conns <= 1  # sequential requests reuse one connection
    connect, ehlo, mail, rcpt, data, eom = seen[:6]
    assert connect["request"] == "smtpd_access_policy"
    assert connect["client_address"] == "127.0.0.1"
    assert connect["server_port"] == str(server.ports["script"])
    assert connect["policy_context"] == "test"
    assert ehlo["helo_name"] == "attrs.test" and ehlo["protocol_name"] == "ESMTP"
    assert mail["sender"] == "sender@attrs.example" and mail["size"] == "100"
    assert rcpt["recipient"] == "first@rcpt.example" and rcpt["queue_id"]
    assert data["recipient_count"] == "1"
    assert int(eom["size"]) > len(MESSAGE)
    # the same instance for every request about one message, a new one for the next
    assert len({r["instance"] for r in seen[2:6]}) == 1
    assert seen[6]["instance"] != seen[2]["instance"]
    assert seen[6]["queue_id"] != seen[2]["queue_id"]


# --- servers that fail -----------------------------------------------------------------


def test_server_down_gives_the_default_action(server):
    started = time.monotonic()
    code, text, client = send(server.ports["down"], "anyone@rcpt.example")
    assert (code, text) == (451, b"4.3.0 Policy server unavailable, try again later")
    assert time.monotonic() - started < 2
    client.quit()
    assert "policy_server_unavailable" in server.log()


def test_server_that_closes_gives_the_default_action(server):
    assert deliver(server.ports["close"], "anyone@rcpt.example")[0] == 250  # continue
    assert "connection closed before the reply" in server.log()


def test_hanging_server_times_out_while_other_sessions_are_served(server):
    result: dict = {}

    def hung_session() -> None:
        started = time.monotonic()
        code, text, client = send(server.ports["hang"], "anyone@rcpt.example")
        result.update(code=code, text=text, seconds=time.monotonic() - started)
        client.quit()

    thread = threading.Thread(target=hung_session)
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    assert deliver(server.ports["script"], "ok@rcpt.example")[0] == 250
    assert time.monotonic() - started < 0.8  # not stuck behind the hanging one
    assert thread.is_alive()
    thread.join(10)
    assert (result["code"], result["text"]) == (550, b"5.3.0 Policy server unavailable")
    assert 1.0 <= result["seconds"] < 2.5
