"""HTTP/JSON hooks through the real server, against a real HTTP server started
here (Python's http.server in a thread) that implements a small content filter:
reject on a keyword, add/insert/change/delete headers, replace the body, change
the sender and the recipients, quarantine, discard; and hooks that time out,
answer garbage, refuse the credentials or are down get their default action.
"""

from __future__ import annotations

import json
import smtplib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.integration.conftest import Appliance
from tests.peers import free_port

TOKEN = "Bearer s3cret"


class FilterHandler(BaseHTTPRequestHandler):
    """POST /filter: the filter; /slow: answers after 3 s; /garbage: not JSON."""

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers["Content-Length"]))
        request = json.loads(data)
        self.server.requests.append((self.path, dict(self.headers), request))
        if self.path == "/slow":
            time.sleep(3)
        if self.path == "/garbage":
            return self._send(200, b"<html>oops</html>")
        if self.headers.get("Authorization") != TOKEN:
            return self._send(401, b"{}")
        self._send(200, json.dumps(decide(request)).encode())

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass  # the appliance gave up waiting


def decide(request: dict) -> dict:
    """The filter's logic, by stage."""
    stage = request["context"]["stage"]
    env = request.get("envelope") or {}
    if stage == "ehlo" and request["context"]["client"]["helo"] == "bye.test":
        return {"action": "reject", "response": {"status": 554, "enhancedStatus": "5.7.1",
                                                 "message": "Go away", "disconnect": True}}
    if stage == "mail" and env["from"]["address"] == "changeme@sender.example":
        return {"action": "accept", "modifications": [
            {"type": "changeFrom", "value": "changed@sender.example",
             "parameters": {"BODY": "8BITMIME"}}]}
    if stage == "rcpt" and env["to"][-1]["address"] == "rewrite@rcpt.example":
        return {"action": "accept", "modifications": [
            {"type": "deleteRecipient", "value": "rewrite@rcpt.example"},
            {"type": "addRecipient", "value": "rewritten@rcpt.example",
             "parameters": {"NOTIFY": "NEVER"}}]}
    if stage == "rcpt" and env["to"][-1]["address"] == "tagged@rcpt.example":
        return {"action": "accept", "modifications": [
            {"type": "addHeader", "name": "X-Rcpt-Tag", "value": "tagged at RCPT"}]}
    if stage == "mail" and env["from"]["address"] == "drop@sender.example":
        return {"action": "discard"}
    if stage != "data":
        return {"action": "accept"}
    contents = request["message"]["contents"]
    if "VIAGRA" in contents:
        return {"action": "reject", "response": {"status": 550, "enhancedStatus": "5.7.1",
                                                 "message": "Spam keyword found"}}
    if "QUARANTINE" in contents:
        return {"action": "quarantine", "response": {"message": "looks odd"}}
    if "DISCARDME" in contents:
        return {"action": "discard"}
    mods = [{"type": "addHeader", "name": "X-Filter", "value": "checked"}]
    if "EDIT" in contents:
        mods += [{"type": "insertHeader", "index": 0, "name": "X-Top", "value": "first"},
                 {"type": "changeHeader", "index": 1, "name": "Subject", "value": "changed"},
                 {"type": "deleteHeader", "index": 1, "name": "X-Remove"},
                 {"type": "replaceContents", "value": "New body.\n"}]
    return {"action": "accept", "modifications": mods}


@pytest.fixture(scope="module")
def web():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FilterHandler)
    server.daemon_threads = True
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, certs, web):
    base = f"http://127.0.0.1:{web.server_address[1]}"
    extra = f"""
        [[listeners.hooks.http_hooks.hooks]]
        name = "filter"
        url = "{base}/filter"
        stages = ["ehlo", "mail", "rcpt", "data"]
        auth_header = "{TOKEN}"

        [[listeners.slow.http_hooks.hooks]]
        name = "slow"
        url = "{base}/slow"
        timeout = "1s"
        default_action = "reject"

        [[listeners.garbage.http_hooks.hooks]]
        name = "garbage"
        url = "{base}/garbage"
        stages = ["rcpt"]

        [[listeners.noauth.http_hooks.hooks]]
        name = "noauth"
        url = "{base}/filter"
        stages = ["mail"]

        [[listeners.down.http_hooks.hooks]]
        name = "down"
        url = "http://127.0.0.1:{free_port()}/filter"
        default_action = "continue"
    """
    names = ("hooks", "slow", "garbage", "noauth", "down")
    app = Appliance(tmp_path_factory.mktemp("hooks"), extra, {n: {} for n in names},
                    certs[:2]).start()
    yield app
    app.stop()


def message(body: str, extra_headers: str = "") -> bytes:
    return (f"From: a@sender.example\r\nSubject: hook test\r\n{extra_headers}\r\n"
            f"{body}\r\n").encode()


def deliver(port: int, data: bytes, sender: str = "a@sender.example",
            rcpts: tuple[str, ...] = ("b@rcpt.example",)) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10) as c:
        c.ehlo()
        assert c.mail(sender)[0] == 250
        for rcpt in rcpts:
            assert c.rcpt(rcpt)[0] == 250
        return c.data(data)


def queued(app: Appliance, reply: bytes, suffix: str) -> bytes:
    queue_id = reply.decode().rsplit(" ", 1)[-1]
    return (app.spool / "queue" / f"{queue_id}{suffix}").read_bytes()


# --- the filter -----------------------------------------------------------------------


def test_reject_on_a_keyword_and_nothing_is_stored(server):
    before = len(server.queued())
    assert deliver(server.ports["hooks"], message("Buy VIAGRA now")) == (
        550, b"5.7.1 Spam keyword found")
    assert len(server.queued()) == before


def test_clean_mail_gets_the_filter_header(server, web):
    code, reply = deliver(server.ports["hooks"], message("Hello there."))
    assert code == 250, reply
    stored = queued(server, reply, ".msg")
    head = stored.split(b"\r\n\r\n")[0]
    assert head.endswith(b"\r\nX-Filter: checked")
    path, headers, request = web.requests[-1]
    assert path == "/filter" and headers["Authorization"] == TOKEN
    assert request["context"]["stage"] == "data"
    assert request["context"]["client"] == {"ip": "127.0.0.1", "port": request["context"][
        "client"]["port"], "ptr": "", "helo": "client.test"}
    assert request["envelope"]["from"]["address"] == "a@sender.example"
    assert [r["address"] for r in request["envelope"]["to"]] == ["b@rcpt.example"]
    assert request["message"]["contents"] == "Hello there.\r\n"
    assert ["Subject", "hook test"] in request["message"]["headers"]
    assert request["message"]["headers"][0][0] == "Received"


def test_header_and_body_modifications(server):
    code, reply = deliver(server.ports["hooks"], message("EDIT me", "X-Remove: 1\r\n"))
    assert code == 250, reply
    head, body = queued(server, reply, ".msg").split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    assert lines[0] == b"X-Top: first"
    assert lines[1].startswith(b"Received: ")
    assert b"Subject: changed" in lines and b"Subject: hook test" not in lines
    assert not any(line.startswith(b"X-Remove") for line in lines)
    assert body == b"New body.\r\n"


def test_envelope_modifications(server):
    code, reply = deliver(server.ports["hooks"], message("Hello."),
                          sender="changeme@sender.example",
                          rcpts=("keep@rcpt.example", "rewrite@rcpt.example"))
    assert code == 250, reply
    env = json.loads(queued(server, reply, ".json"))
    assert env["mail_from"] == {"address": "changed@sender.example",
                                "params": {"BODY": "8BITMIME"}}
    addresses = [r["address"] for r in env["recipients"]]
    assert addresses == ["keep@rcpt.example", "rewritten@rcpt.example"]
    assert env["recipients"][1]["params"] == {"NOTIFY": "NEVER"}


def test_header_asked_for_at_rcpt_is_added_to_the_message(server):
    code, reply = deliver(server.ports["hooks"], message("Hello."),
                          rcpts=("tagged@rcpt.example",))
    assert code == 250, reply
    assert b"\r\nX-Rcpt-Tag: tagged at RCPT\r\n" in queued(server, reply, ".msg")


def test_discard_at_mail_drops_the_message_at_its_end(server):
    before = len(server.queued())
    code, reply = deliver(server.ports["hooks"], message("Hello."),
                          sender="drop@sender.example")
    assert code == 250, reply
    assert len(server.queued()) == before


def test_quarantine(server):
    code, reply = deliver(server.ports["hooks"], message("QUARANTINE this"))
    assert code == 250, reply
    assert json.loads(queued(server, reply, ".json"))["quarantine"] == "looks odd"


def test_discard(server):
    before = len(server.queued())
    assert deliver(server.ports["hooks"], message("DISCARDME"))[0] == 250
    assert len(server.queued()) == before


def test_reject_with_disconnect_at_ehlo(server):
    c = smtplib.SMTP("127.0.0.1", server.ports["hooks"], local_hostname="bye.test", timeout=10)
    assert c.ehlo() == (554, b"5.7.1 Go away")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        c.noop()


# --- hooks that fail ------------------------------------------------------------------


def test_timeout_gives_the_default_action_while_others_are_served(server):
    result: dict = {}

    def slow() -> None:
        started = time.monotonic()
        result["reply"] = deliver(server.ports["slow"], message("Hello."))
        result["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    assert deliver(server.ports["hooks"], message("Hello."))[0] == 250
    assert time.monotonic() - started < 0.7
    assert thread.is_alive()
    thread.join(10)
    assert result["reply"] == (550, b"5.3.0 Content filter unavailable")
    assert 1.0 <= result["seconds"] < 2.5
    assert "http_hook_failed" in server.log()


def test_garbage_gives_the_default_action(server):
    with smtplib.SMTP("127.0.0.1", server.ports["garbage"], timeout=10) as c:
        c.ehlo()
        assert c.mail("a@sender.example")[0] == 250
        assert c.rcpt("b@rcpt.example") == (
            451, b"4.3.0 Content filter unavailable, try again later")
        assert c.noop()[0] == 250
    assert "not JSON" in server.log()


def test_refused_credentials_give_the_default_action(server):
    with smtplib.SMTP("127.0.0.1", server.ports["noauth"], timeout=10) as c:
        c.ehlo()
        assert c.mail("a@sender.example")[0] == 451
    assert "HTTP status 401" in server.log()


def test_hook_down_with_continue_accepts(server):
    assert deliver(server.ports["down"], message("Hello."))[0] == 250
    assert "hook=down" in server.log() and "NewConnectionError" in server.log()
