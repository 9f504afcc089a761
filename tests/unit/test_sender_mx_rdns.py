"""The sender MX and reverse DNS checks' logic against the real test zones (unbound)."""

from __future__ import annotations

import pytest
from appliance_plugins.reverse_dns import fcrdns
from appliance_plugins.sender_mx import sender_mx

from appliance.dns import Resolver
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
