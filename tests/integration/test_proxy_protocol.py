"""The PROXY protocol on a listener, against the real server: the test plays the load
balancer and writes the header itself (HAProxy in front: test_haproxy.py). The
relayed client stands for the session in the log line, the access list, the per-IP
limit, the Received header, the spooled envelope and a policy server's attributes;
an untrusted peer, a malformed header and a late one are refused and logged."""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading

import pytest

from tests.integration.test_policy import ScriptedPolicyServer
from tests.peers import wait_for

from .conftest import read_reply
from .test_flow import closed
from .test_receive import MSG, stored, talk

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(client: str, port: int = 40001, server: str = "198.51.100.1") -> bytes:
    return f"PROXY TCP4 {client} {server} {port} 25\r\n".encode()


def v2(client: str | None, port: int = 40001, tlvs: bytes = b"", local: bool = False) -> bytes:
    body = b"" if client is None else (
        socket.inet_aton(client) + socket.inet_aton("198.51.100.1")
        + struct.pack("!HH", port, 25))
    body += tlvs
    return (V2_SIGNATURE + bytes([0x20 if local else 0x21, 0x00 if local else 0x11])
            + struct.pack("!H", len(body)) + body)


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def proxied(app, header: bytes, source: str = "127.0.0.1") -> tuple[socket.socket, bytes]:
    s = socket.create_connection(("127.0.0.1", app.port), timeout=10,
                                 source_address=(source, 0))
    s.sendall(header)
    try:
        return s, read_reply(s)
    except ConnectionResetError:  # closed with the header unread
        return s, b""


def send_message(s: socket.socket, ehlo: bool = True) -> bytes:
    if ehlo:
        assert talk(s, b"EHLO relay.example\r\n").startswith(b"250")
    assert talk(s, b"MAIL FROM:<a@example.org>\r\n").startswith(b"250")
    assert talk(s, b"RCPT TO:<b@example.net>\r\n").startswith(b"250")
    assert talk(s, b"DATA\r\n").startswith(b"354")
    return talk(s, MSG + b".\r\n")


def listener(mode: str, trusted: str = '["127.0.0.1"]', extra: str = "") -> str:
    return (f'[listeners.mta]\nproxy_protocol = "{mode}"\n'
            f'proxy_trusted_networks = {trusted}\nproxy_timeout = "1s"\n{extra}\n'
            + RELAY)


#: The relayed clients are not loopback: the recipient's domain is ours.
RELAY = '[relay]\nlocal_domains = ["example.net"]\ncheck_recipients = false\n'



def test_v1_client_stands_for_the_session(make_appliance):
    app = make_appliance(listener("v1"))
    s, greeting = proxied(app, v1("192.0.2.7"))
    assert greeting.startswith(b"220 ")
    ehlo = talk(s, b"EHLO relay.example\r\n")
    assert b"[192.0.2.7]" in ehlo
    assert talk(s, b"RSET\r\n").startswith(b"250")
    assert send_message(s).startswith(b"250")
    s.close()
    env, text = stored(app)
    assert env["client"]["ip"] == "192.0.2.7" and env["client"]["port"] == 40001
    assert env["listener"]["ip"] == "198.51.100.1" and env["listener"]["port"] == 25
    assert b"[192.0.2.7]" in text.split(b"\r\n\r\n")[0]  # Received
    assert b"127.0.0.1" not in text.split(b"\r\n\r\n")[0]
    log = app.log()
    assert "listener=mta client=[192.0.2.7]:40001 server=[198.51.100.1]:25" in log
    assert "proxied" in log and "proxy=[127.0.0.1]" in log and "version=1" in log


def test_v2_with_tlvs_and_the_tls_hello_right_behind_it(make_appliance, certs):
    """The header and the client's TLS hello arrive together on an implicit-TLS
    listener: only the header's bytes are taken before the handshake."""
    app = make_appliance(listener("v2"), listeners={"mta": {"tls_mode": "implicit"}})
    raw = socket.create_connection(("127.0.0.1", app.port), timeout=10)
    tlvs = (tlv(0x02, b"mail.example.org") + tlv(0x05, b"\x01\x02req")
            + tlv(0x20, struct.pack("!BI", 1, 0) + tlv(0x21, b"TLSv1.3")
                  + tlv(0x23, b"TLS_AES_128_GCM_SHA256")))
    raw.sendall(v2("203.0.113.9", 5555, tlvs))
    context = ssl.create_default_context(cafile=str(certs[2]))
    with context.wrap_socket(raw, server_hostname="localhost") as s:
        assert read_reply(s).startswith(b"220 ")
        assert b"[203.0.113.9]" in talk(s, b"EHLO relay.example\r\n")
        assert talk(s, b"QUIT\r\n").startswith(b"221")
    log = app.log()
    assert "client=[203.0.113.9]:5555" in log
    assert "authority=mail.example.org" in log and "unique_id=010272657" in log
    assert "proxy_tls=TLSv1.3" in log and "proxy_cipher=TLS_AES_128_GCM_SHA256" in log


def test_v2_local_keeps_the_real_endpoints(make_appliance):
    """A proxy's own health check (LOCAL) is served as the proxy itself."""
    app = make_appliance(listener("any"))
    s, greeting = proxied(app, v2(None, local=True))
    assert greeting.startswith(b"220 ")
    assert b"[127.0.0.1]" in talk(s, b"EHLO relay.example\r\n")
    s.close()
    assert "command=LOCAL" in app.log()


def test_untrusted_peer_gets_421_and_a_log_line_while_the_proxy_is_served(make_appliance):
    app = make_appliance(listener("any", trusted='["127.0.0.1", "10.0.0.0/8"]'))
    s, reply = proxied(app, v1("192.0.2.7"), source="127.0.0.2")
    assert reply == b"421 4.7.0 Not a trusted proxy, closing connection\r\n"
    assert closed(s)
    s.close()
    s, greeting = proxied(app, v1("192.0.2.7"))
    assert greeting.startswith(b"220 ")
    s.close()
    assert "proxy_refused listener=mta peer=[127.0.0.2]" in app.log()
    assert "reason='untrusted peer'" in app.log() or 'reason="untrusted peer"' in app.log()


@pytest.mark.parametrize("mode,header,reason", [
    ("v1", b"EHLO client.example\r\n", "expected a PROXY version 1 line"),
    ("v2", b"PROXY TCP4 192.0.2.7 198.51.100.1 1 25\r\n", "expected a PROXY version 2"),
    ("any", b"PROXY TCP4 192.0.2.7 198.51.100.1 99999 25\r\n", "not a number"),
    ("any", V2_SIGNATURE + b"\x21\x11\x00\x05abcde", "needs 12"),
])
def test_malformed_header_closes_with_a_log_line(make_appliance, mode, header, reason):
    app = make_appliance(listener(mode))
    s, reply = proxied(app, header)
    assert reply == b""  # closed, no banner
    s.close()
    wait_for(lambda: "proxy_refused" in app.log(), "the proxy_refused line")
    assert reason in app.log()
    s, greeting = proxied(app, v1("192.0.2.7") if mode != "v2" else v2("192.0.2.7"))
    assert greeting.startswith(b"220 ")  # the next connection is served
    s.close()


def test_header_that_does_not_come_is_a_timeout(make_appliance):
    app = make_appliance(listener("v1"))
    s, reply = proxied(app, b"PROXY TCP4 192.0.2.7")  # and nothing more
    assert reply == b""
    s.close()
    assert "no header within 1s" in app.log()


def test_access_list_and_per_ip_limit_see_the_relayed_client(make_appliance):
    app = make_appliance(listener("v1") + """
        [access]
        deny = ["192.0.2.66"]
        [flow]
        exempt_networks = []
        [flow.concurrent_connections_per_ip]
        limit = 1
    """)
    s, reply = proxied(app, v1("192.0.2.66"))
    assert reply.startswith(b"554 5.7.1")
    s.close()
    first, reply = proxied(app, v1("192.0.2.7"))
    assert reply.startswith(b"220 ")
    second, reply = proxied(app, v1("192.0.2.7", port=40002))
    assert reply.startswith(b"421 4.7.0") and b"from 192.0.2.7 (limit 1)" in reply
    second.close()
    other, reply = proxied(app, v1("192.0.2.8"))  # same proxy, another client
    assert reply.startswith(b"220 ")
    for s in (first, other):
        s.close()
    assert "access_refused" in app.log() and "client=192.0.2.66" in app.log()


def test_policy_server_gets_the_relayed_client(make_appliance):
    policy = ScriptedPolicyServer()
    threading.Thread(target=policy.serve_forever, daemon=True).start()
    try:
        app = make_appliance(listener("v2") + f"""
            [[listeners.mta.policy.servers]]
            name = "script"
            address = "{policy.address}"
            stages = ["rcpt"]
        """)
        s, greeting = proxied(app, v2("192.0.2.7", 40123))
        assert greeting.startswith(b"220 ")
        assert send_message(s).startswith(b"250")
        s.close()
    finally:
        policy.shutdown()
        policy.server_close()
    request = policy.requests[0]
    assert (request["client_address"], request["client_port"]) == ("192.0.2.7", "40123")
    assert json.loads(stored(app)[0]["client"]["ip"].join('""')) == "192.0.2.7"
