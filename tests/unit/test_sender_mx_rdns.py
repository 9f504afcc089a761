"""The sender MX and reverse DNS checks' logic against the real test zones (unbound),
and the reverse-dns plugin's per-listener settings on real AppConfig objects."""

from __future__ import annotations

import pytest
from appliance_plugins.reverse_dns import NoName, ReverseDnsArea, ReverseDnsPlugin, fcrdns
from appliance_plugins.sender_mx import sender_mx

from appliance.config import AppConfig, Listener
from appliance.dns import Resolver
from appliance.mail.context import SessionContext
from tests.dns_fixture import stall_name


@pytest.fixture(scope="module")
def lookup(dns_server):
    return Resolver([dns_server.nameserver], timeout=0.3, retries=0).budget(30)


@pytest.mark.parametrize(("domain", "expected"), [
    ("has-mx.mx.test", ("Pass", "MX mail.mx.test")),
    ("a-only.mx.test", ("Pass", "no MX, has an address")),
    ("no-address.mx.test", ("Fail", "no MX and no address")),
    ("does-not-exist.mx.test", ("Fail", "no MX and no address")),
    ("null-mx.mx.test", ("Fail", "null MX")),
    ("[192.0.2.1]", ("Pass", "address literal")),
])
def test_sender_mx(lookup, domain, expected):
    assert sender_mx(lookup, domain) == expected


def test_sender_mx_error_when_dns_does_not_answer(lookup):
    assert sender_mx(lookup, stall_name())[0] == "Error"


@pytest.mark.parametrize(("ip", "expected"), [
    ("127.0.0.1", ("pass", "localhost.rdns.test")),
    ("::1", ("pass", "ip6-localhost.rdns.test")),
    ("127.0.0.3", ("fail", "mismatch.rdns.test")),
    ("127.0.0.4", ("none", "")),
])
def test_fcrdns(lookup, ip, expected):
    assert fcrdns(lookup, ip) == expected


def test_reverse_dns_answers_by_the_sessions_listener(dns_server):
    """[listeners.strict.reverse_dns.on_none] refuses a client without a PTR name;
    the listener "mta" shares [reverse_dns], which only records."""
    area = ReverseDnsArea()
    strict = ReverseDnsArea(on_none=NoName(action="reject"))
    config = AppConfig(areas={"reverse_dns": area}, listeners={
        "mta": Listener(port=25, areas={"reverse_dns": area}),
        "strict": Listener(port=26, areas={"reverse_dns": strict})})
    p = ReverseDnsPlugin(ReverseDnsPlugin.Config(enabled=True))
    p.on_configure(config=config, dns=Resolver([dns_server.nameserver], timeout=0.3,
                                                retries=0))

    def connect(listener: str):
        s = SessionContext(session_id="S1", listener=listener, local_ip="127.0.0.1",
                           local_port=25, remote_ip="127.0.0.4", remote_port=4000)
        return p.on_connect(s), s

    verdict, s = connect("mta")
    assert verdict is None and s.auth_results[0].result == "fail"     # recorded only
    verdict, s = connect("strict")
    assert verdict.reply_parts() == (550, "5.7.25",
                                     "Client host [127.0.0.4] has no reverse DNS name")
