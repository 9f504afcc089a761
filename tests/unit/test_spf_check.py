"""pyspf through the appliance's resolver, against the real test zones (unbound)."""

from __future__ import annotations

import time
import uuid

import pytest
from appliance_plugins.spf import check

from appliance.dns import Resolver


@pytest.fixture(scope="module")
def resolver(dns_server):
    return Resolver([dns_server.nameserver], timeout=0.5, retries=0)


@pytest.mark.parametrize(("ip", "sender", "expected"), [
    ("127.0.0.1", "alice@pass.spf.test", "pass"),
    ("::1", "alice@pass.spf.test", "pass"),
    ("127.0.0.1", "alice@fail.spf.test", "fail"),
    ("127.0.0.1", "alice@softfail.spf.test", "softfail"),
    ("127.0.0.1", "alice@neutral.spf.test", "neutral"),
    ("127.0.0.1", "alice@none.spf.test", "none"),
    ("127.0.0.1", "alice@include.spf.test", "pass"),
    ("127.0.0.1", "alice@redirect.spf.test", "fail"),
    ("127.0.0.1", "alice@redirect-pass.spf.test", "pass"),
    ("127.0.0.1", "alice@macro.spf.test", "pass"),
    ("127.0.0.1", "bob@macro.spf.test", "fail"),
    ("127.0.0.1", "alice@toomany.spf.test", "permerror"),
    ("127.0.0.1", "alice@syntax.spf.test", "permerror"),
    ("127.0.0.1", "{fresh}@tempfail.spf.test", "temperror"),
])
def test_results(resolver, ip, sender, expected):
    sender = sender.replace("{fresh}", uuid.uuid4().hex[:12])
    result, _ = check(resolver.budget(5), ip, sender, "client.test", "mx.test.example", 5)
    assert result == expected


def test_fail_explanation_is_the_domains_exp_record(resolver):
    result, text = check(resolver.budget(5), "127.0.0.1", "alice@fail.spf.test", "h",
                         "mx.test.example", 5)
    assert (result, text) == ("fail", "fail.spf.test does not authorize 127.0.0.1 to send "
                                      "mail for it")


def test_temperror_comes_within_the_budget(dns_server):
    slow = Resolver([dns_server.nameserver], timeout=5, retries=0)
    started = time.monotonic()
    sender = f"{uuid.uuid4().hex[:12]}@tempfail.spf.test"
    result, _ = check(slow.budget(0.5), "127.0.0.1", sender, "h", "mx", 0.5)
    assert result == "temperror"
    assert time.monotonic() - started < 1.5
