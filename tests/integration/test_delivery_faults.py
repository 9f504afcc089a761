"""Next hop faults: down, slow (never greets), closing the connection in the middle
of the data. Each leaves the recipient deferred with the reason, and the next
attempt delivers it once. The misbehaving peers are scripted here (no real server
hangs or drops a connection on cue); the one behaving as a server is Dovecot."""

from __future__ import annotations

import signal
import socket
import socketserver
import threading

import pytest

from tests.lmtp_fixture import DOMAIN
from tests.peers import free_port

from .delivery_helpers import fast, lmtp_config, message, send, states, wait_until


class ScriptedSmtp(socketserver.ThreadingTCPServer):
    """An SMTP server whose n-th connection behaves as ``script[n]`` says (the last
    entry for the rest): "silent" never greets, "drop" closes in the middle of the
    data, "ok" accepts. ``messages`` holds what was accepted."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, script: list[str]) -> None:
        self.script, self.connections, self.messages = script, 0, []
        self.port = free_port()
        super().__init__(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def next_mode(self) -> str:
        mode = self.script[min(self.connections, len(self.script) - 1)]
        self.connections += 1
        return mode


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        mode = self.server.next_mode()
        if mode == "silent":
            self.rfile.read()  # until the client gives up
            return
        self.reply("220 scripted ESMTP")
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.reply("250-scripted\r\n250 8BITMIME")
            elif verb == b"DATA":
                self.reply("354 go ahead")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk
                    if mode == "drop" and len(data) > 20:
                        self.request.shutdown(socket.SHUT_RDWR)
                        return
                self.server.messages.append(data)
                self.reply("250 2.0.0 accepted")
            elif verb == b"QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 2.1.0 ok")

    def reply(self, text: str) -> None:
        self.wfile.write(text.encode() + b"\r\n")


def scripted_config(server: ScriptedSmtp, extra: str = "") -> str:
    return fast(extra) + f"""
default = "scripted"
[delivery.next_hops.scripted]
protocol = "smtp"
address = "inet:127.0.0.1:{server.port}"
starttls = "none"
"""


@pytest.mark.parametrize("script, reason", [
    (["silent", "ok"], "timed out"),
    (["drop", "ok"], "lost connection with scripted"),
])
def test_a_fault_defers_and_the_retry_delivers_once(make_appliance, script, reason):
    server = ScriptedSmtp(script)
    try:
        app = make_appliance(scripted_config(server, 'connect_timeout = "1s"\n'))
        send(app, "a@example.org", [f"alice@{DOMAIN}"], message(1))
        wait_until(lambda: len(server.messages) == 1 and not app.queued(), log=app.log)
        assert server.connections == 2
        assert b"Subject: test 1" in server.messages[0]
        deferred = [line for line in app.log().splitlines() if " deferred " in line]
        assert len(deferred) == 1 and reason in deferred[0], deferred
    finally:
        server.shutdown()
        server.server_close()


def test_next_hop_down_defers_with_the_reason_then_delivers(make_appliance, lmtp):
    lmtp.stop()
    app = make_appliance(lmtp_config(lmtp, address=lmtp.inet))
    send(app, "a@example.org", [f"alice@{DOMAIN}"], message(1))
    wait_until(lambda: states(app.spool), log=app.log)
    (records,) = states(app.spool).values()
    assert records[0]["state"] == "deferred" and records[0]["status"] == "4.4.1"
    assert "connect to dovecot[127.0.0.1]" in records[0]["reason"]
    assert "Connection refused" in records[0]["reason"]
    # the server keeps accepting meanwhile
    assert send(app, "a@example.org", [f"bob@{DOMAIN}"], message(2)) == {}
    lmtp.start()
    wait_until(lambda: len(lmtp.messages("alice")) == 1 and len(lmtp.messages("bob")) == 1
               and not app.queued(), log=app.log)


def test_sighup_restarts_the_service_with_the_new_next_hops(make_appliance, lmtp):
    nobody = free_port()  # nothing listens there
    app = make_appliance(lmtp_config(lmtp, address=f"inet:127.0.0.1:{nobody}"))
    send(app, "a@example.org", [f"alice@{DOMAIN}"], message(1))
    wait_until(lambda: " deferred " in app.log(), log=app.log)
    (app.config_dir / "50-extra.toml").write_text(lmtp_config(lmtp))
    app.signal(signal.SIGHUP)
    wait_until(lambda: lmtp.messages("alice") and not app.queued(), log=app.log)
    assert app.log().count("delivery_process") == 2
    assert "delivery_died" not in app.log()
