"""The milter client and chain over real loopback sockets, against a peer that
plays byte sequences from the protocol description. This peer is a stand-in
(no real milter lets a test choose its protocol version, its no-reply steps or
when it sends PROGRESS); the real milters are in tests/integration/test_milter.py."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from appliance.clients.milter import MilterChain, MilterSpec
from appliance.clients.milter.client import MilterClient, MilterFailure
from appliance.mail.context import Recipient, SessionContext, TLSInfo, Transaction, core_set
from appliance.mail.headers import Headers
from appliance.mail.message import Body, Message


def frame(cmd: bytes, data: bytes = b"") -> bytes:
    return struct.pack("!I", len(data) + 1) + cmd + data


def optneg(version=6, actions=0x1FF, protocol=0, extra=b"") -> bytes:
    return frame(b"O", struct.pack("!III", version, actions, protocol) + extra)


class Peer:
    """A listening socket; ``script(conn, peer)`` runs for the first connection.
    Every frame read is recorded in ``seen`` as (command, data)."""

    def __init__(self, script) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.seen: list[tuple[bytes, bytes]] = []
        self.script = script
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def spec(self) -> str:
        return f"inet:127.0.0.1:{self.sock.getsockname()[1]}"

    def _run(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            try:
                self.script(conn, self)
            except (OSError, EOFError):
                pass

    def read(self, conn) -> tuple[bytes, bytes]:
        head = self._exact(conn, 4)
        (n,) = struct.unpack("!I", head)
        body = self._exact(conn, n)
        item = (body[:1], body[1:])
        self.seen.append(item)
        return item

    def read_until(self, conn, command: bytes) -> tuple[bytes, bytes]:
        while True:
            item = self.read(conn)
            if item[0] == command:
                return item

    @staticmethod
    def _exact(conn, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def peer():
    made = []

    def make(script):
        p = Peer(script)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


def session() -> SessionContext:
    return SessionContext(session_id="S1", listener="mta", local_ip="127.0.0.1",
                          local_port=25, remote_ip="192.0.2.7", remote_port=40000,
                          hostname="mx.example")


def message(tmp_path) -> Message:
    headers, _ = Headers.parse(b"From: a@example.org\r\nSubject: hi\r\n")
    body = Body(str(tmp_path))
    body.write(b"body\r\n")
    return Message(headers, body)


def run_message(chain, tmp_path, s=None):
    s = s or session()
    tx = Transaction(queue_id="Q1", mail_from="a@example.org", mail_params={"SIZE": 5})
    results = [chain.run("connect", s), chain.run("helo", s, hostname="client.example"),
               chain.run("mail", s, tx)]
    rcpt = Recipient("b@example.net")
    results.append(chain.run("rcpt", s, tx, rcpt))
    tx.recipients.append(rcpt)
    results.append(chain.run("data", s, tx))
    m = message(tmp_path)
    results.append(chain.run("message", s, tx, message=m))
    return results, tx, m


def test_progress_keeps_a_slow_milter_alive(peer, tmp_path):
    def script(conn, p):
        p.read(conn)
        conn.sendall(optneg(protocol=0x7F & ~0x10 | 0x200))  # only the body step
        p.read_until(conn, b"B")
        conn.sendall(frame(b"c"))
        p.read_until(conn, b"E")
        for _ in range(3):  # 3 x 0.3 s > the 0.5 s end-of-message timeout
            time.sleep(0.3)
            conn.sendall(frame(b"p"))
        conn.sendall(frame(b"h", b"X-Slow\x00but alive\x00") + frame(b"c"))
        p.read(conn)
    p = peer(script)
    chain = MilterChain([MilterSpec("slow", p.spec, eom_timeout=0.5)], 10, str(tmp_path))
    results, _, m = run_message(chain, tmp_path)
    assert results == [None] * 6
    assert m.headers.get_all("X-Slow") == ["but alive"]
    chain.close()


def test_a_silent_milter_times_out_with_the_default_action(peer, tmp_path):
    def script(conn, p):
        p.read(conn)
        time.sleep(1)
    p = peer(script)
    spec = MilterSpec("mute", p.spec, command_timeout=0.3, default_action="reject")
    chain = MilterChain([spec], 10, str(tmp_path))
    started = time.monotonic()
    # a failure at connect answers at MAIL FROM, as Postfix does: greeting and EHLO go on
    assert chain.run("connect", session()) is None
    assert time.monotonic() - started < 1
    assert chain.run("helo", session(), hostname="x") is None
    # failed: not asked again in this session, the default action answers at once
    tx = Transaction(queue_id="Q1", mail_from="a@example.org")
    started = time.monotonic()
    assert str(chain.run("mail", session(), tx)) == "reject 550 5.7.1 Command rejected"
    assert time.monotonic() - started < 0.1


def test_the_deadline_bounds_every_wait(peer, tmp_path):
    def script(conn, p):
        p.read(conn)
        time.sleep(1)
    p = peer(script)
    chain = MilterChain([MilterSpec("mute", p.spec, command_timeout=30)], 0.3, str(tmp_path))
    started = time.monotonic()
    tx = Transaction(queue_id="Q1", mail_from="a@example.org")
    assert chain.run("mail", session(), tx).action.value == "tmpreject"
    assert time.monotonic() - started < 1


def test_no_reply_steps_are_not_waited_for(peer, tmp_path):
    nr = 0x1000 | 0x2000 | 0x4000 | 0x8000 | 0x10000 | 0x80 | 0x40000 | 0x80000

    def script(conn, p):
        p.read(conn)
        conn.sendall(optneg(protocol=nr))
        p.read_until(conn, b"E")  # nothing answered before end of message
        conn.sendall(frame(b"a"))
        p.read(conn)
    p = peer(script)
    chain = MilterChain([MilterSpec("quiet", p.spec, command_timeout=0.5)], 10, str(tmp_path))
    started = time.monotonic()
    results, _, _ = run_message(chain, tmp_path)
    assert results == [None] * 6 and time.monotonic() - started < 0.5
    assert [c for c, _ in p.seen if c != b"D"] == [
        b"O", b"C", b"H", b"M", b"R", b"T", b"L", b"L", b"N", b"B", b"E"]
    chain.close()


def test_version_2_milter_gets_no_data_command(peer, tmp_path):
    def script(conn, p):
        p.read(conn)
        conn.sendall(optneg(version=2, actions=0x01, protocol=0))
        while True:
            cmd, _ = p.read(conn)
            if cmd != b"D":
                conn.sendall(frame(b"c"))
    p = peer(script)
    chain = MilterChain([MilterSpec("old", p.spec, command_timeout=0.5)], 10, str(tmp_path))
    results, _, _ = run_message(chain, tmp_path)
    assert results == [None] * 6
    assert [c for c, _ in p.seen if c != b"D"] == [
        b"O", b"C", b"H", b"M", b"R", b"L", b"L", b"N", b"B", b"E"]


def test_macros_the_milter_asked_for_replace_the_defaults(peer, tmp_path):
    def script(conn, p):
        p.read(conn)
        conn.sendall(optneg(protocol=0x7E, extra=b"\x00\x00\x00\x00{client_addr} j\x00"))
        p.read_until(conn, b"C")
        conn.sendall(frame(b"a"))  # accept: nothing more in this session
    p = peer(script)
    chain = MilterChain([MilterSpec("m", p.spec)], 10, str(tmp_path))
    assert chain.run("connect", session()) is None
    assert p.seen[1] == (b"D", b"C{client_addr}\x00192.0.2.7\x00j\x00mx.example\x00")
    assert chain.run("helo", session(), hostname="x") is None  # not sent
    assert [c for c, _ in p.seen] == [b"O", b"D", b"C"]


def test_default_macros_per_step_and_fixed_values(peer, tmp_path):
    def script(conn, p):
        p.read(conn)
        conn.sendall(optneg(protocol=0x7E))
        p.read_until(conn, b"C")
        conn.sendall(frame(b"c"))
    p = peer(script)
    spec = MilterSpec("m", p.spec, macros={"connect": ["j", "{client_port}", "{site}"]},
                      macro_values={"{site}": "paris"})
    chain = MilterChain([spec], 10, str(tmp_path))
    assert chain.run("connect", session()) is None
    assert p.seen[1] == (b"D", b"Cj\x00mx.example\x00{client_port}\x0040000\x00"
                               b"{site}\x00paris\x00")


def test_modifications_not_negotiated_are_ignored(peer, tmp_path):
    def script(conn, p):
        p.read(conn)
        conn.sendall(optneg(actions=0x00, protocol=0x27F))  # may change nothing
        p.read_until(conn, b"E")
        conn.sendall(frame(b"h", b"X-Sneaky\x00yes\x00") + frame(b"c"))
    p = peer(script)
    chain = MilterChain([MilterSpec("m", p.spec, command_timeout=0.5)], 10, str(tmp_path))
    results, _, m = run_message(chain, tmp_path)
    assert results == [None] * 6  # not a failure: the change is dropped, mail goes on
    assert not m.headers.exists("X-Sneaky")


def test_a_milter_closing_mid_message_fails_over_to_accept(peer, tmp_path):
    def script(conn, p):
        p.read(conn)
        conn.sendall(optneg(protocol=0x7F & ~0x10 | 0x200))
        p.read_until(conn, b"B")  # then close
    p = peer(script)
    spec = MilterSpec("m", p.spec, default_action="accept")
    chain = MilterChain([spec], 10, str(tmp_path))
    results, _, _ = run_message(chain, tmp_path)
    assert results == [None] * 6


def test_abort_before_the_next_message(peer, tmp_path):
    def script(conn, p):
        p.read(conn)
        conn.sendall(optneg(protocol=0x7F & ~0x04))  # MAIL only
        p.read_until(conn, b"M")
        conn.sendall(frame(b"r"))
        p.read_until(conn, b"M")
        conn.sendall(frame(b"c"))
        p.read_until(conn, b"Q")
    p = peer(script)
    chain = MilterChain([MilterSpec("m", p.spec, command_timeout=0.5)], 10, str(tmp_path))
    s = session()
    chain.run("connect", s)
    tx1 = Transaction(queue_id="Q1", mail_from="a@example.org")
    assert str(chain.run("mail", s, tx1)) == "reject 550 5.7.1 Command rejected"
    tx2 = Transaction(queue_id="Q2", mail_from="a@example.org")
    assert chain.run("mail", s, tx2) is None
    chain.close()
    p.thread.join(2)
    assert [c for c, _ in p.seen if c != b"D"] == [b"O", b"M", b"A", b"M", b"A", b"Q"]


def test_client_refuses_a_bad_negotiation(peer):
    def script(conn, p):
        p.read(conn)
        conn.sendall(optneg(version=9))
    p = peer(script)
    client = MilterClient(MilterSpec("m", p.spec))
    with pytest.raises(MilterFailure, match="version 9"):
        client.open(time.monotonic() + 5)


def test_client_down():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    client = MilterClient(MilterSpec("m", f"inet:127.0.0.1:{port}"))
    with pytest.raises(MilterFailure, match="cannot connect"):
        client.open(time.monotonic() + 5)


def test_unix_socket(tmp_path):
    path = str(tmp_path / "m.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        with conn:
            conn.recv(17)
            conn.sendall(optneg(version=6, actions=0, protocol=0x7F))
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client = MilterClient(MilterSpec("m", f"unix:{path}"))
    assert client.open(time.monotonic() + 5).version == 6
    client.close()
    srv.close()


def test_helo_again_after_starttls_with_the_tls_macros(peer, tmp_path):
    def script(conn, p):
        p.read(conn)
        conn.sendall(optneg(protocol=0x7D))  # HELO only
        for _ in range(2):
            p.read_until(conn, b"H")
            conn.sendall(frame(b"c"))
    p = peer(script)
    chain = MilterChain([MilterSpec("m", p.spec, command_timeout=0.5)], 10, str(tmp_path))
    s = session()
    assert chain.run("connect", s) is None
    assert chain.run("helo", s, hostname="client.example") is None
    core_set(s, "tls", TLSInfo(protocol="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", bits=256))
    assert chain.run("helo", s, hostname="client.example") is None
    p.thread.join(2)
    assert [c for c, _ in p.seen] == [b"O", b"H", b"D", b"H"]  # no macros before TLS
    assert p.seen[2][1] == (b"H{tls_version}\x00TLSv1.3\x00{cipher}\x00"
                            b"TLS_AES_256_GCM_SHA384\x00{cipher_bits}\x00256\x00")


def test_inet6_milter(tmp_path):
    try:
        srv = socket.socket(socket.AF_INET6)
        srv.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    srv.listen(1)
    port = srv.getsockname()[1]

    def serve():
        conn, _ = srv.accept()
        with conn:
            conn.recv(17)
            conn.sendall(optneg(version=6, actions=0, protocol=0x7F))
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client = MilterClient(MilterSpec("m", f"inet6:[::1]:{port}"))
    assert client.open(time.monotonic() + 5).version == 6
    client.close()
    srv.close()


def test_a_milter_added_late_catches_up_then_runs(peer, tmp_path):
    def script(conn, p):
        p.read(conn)
        conn.sendall(optneg(protocol=0x80))  # every step; no reply to headers
        while True:
            cmd, _ = p.read(conn)
            if cmd == b"E":
                conn.sendall(frame(b"h", b"X-Late\x00yes\x00") + frame(b"c"))
            elif cmd not in (b"D", b"L"):
                conn.sendall(frame(b"c"))
    p = peer(script)
    spec = MilterSpec("late-one", p.spec, on_demand=True, command_timeout=0.5)
    chain = MilterChain([spec], 10, str(tmp_path))
    results, tx, m = run_message(chain, tmp_path)  # not asked: it is on demand
    assert results == [None] * 6 and p.seen == []
    tx.recipients.append(Recipient("c@example.net"))
    s = session()
    core_set(s, "helo_name", "client.example")
    result = chain.execute("late-*", "message", s, tx, message=m)
    assert (result.action, result.milter, result.verdict) == ("continue", "", None)
    assert m.headers.get_all("X-Late") == ["yes"]
    assert [c for c, _ in p.seen if c != b"D"] == [
        b"O", b"C", b"H", b"M", b"R", b"R", b"T", b"L", b"L", b"N", b"B", b"E"]
    assert chain.execute("nothing*", "message", session(), tx, message=m).verdict is None
    assert not chain.add("unknown") and chain.add("late-one")
