"""The resolver (appliance.dns) against the real test DNS server (unbound)."""

from __future__ import annotations

import time

import pytest

from appliance.dns import DnsTempError, Resolver, parse_nameserver, reverse_name
from tests.dns_fixture import stall_name


def test_reverse_names_ipv4_and_ipv6_nibbles():
    assert reverse_name("127.0.0.2", "dnsbl.test") == "2.0.0.127.dnsbl.test"
    assert reverse_name("2001:db8::1", "bl.example.") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example")
    assert reverse_name("127.0.0.1") == "1.0.0.127.in-addr.arpa"
    assert reverse_name("::1").endswith(".ip6.arpa")


@pytest.mark.parametrize(("text", "expected"), [
    ("192.0.2.53", ("192.0.2.53", 53)),
    ("192.0.2.53:5353", ("192.0.2.53", 5353)),
    ("2001:db8::53", ("2001:db8::53", 53)),
    ("[2001:db8::53]:5353", ("2001:db8::53", 5353)),
])
def test_nameserver_forms(text, expected):
    assert parse_nameserver(text) == expected


@pytest.fixture(scope="module")
def resolver(dns_server):
    return Resolver([dns_server.nameserver], timeout=0.5, retries=0)


def test_record_types(resolver):
    lookup = resolver.budget(5)
    assert lookup.txt("pass.spf.test") == ["v=spf1 ip4:127.0.0.0/24 ip6:::1 -all"]
    assert lookup.mx("has-mx.mx.test") == [(10, "mail.mx.test")]
    assert lookup.mx("null-mx.mx.test") == [(0, ".")]
    assert lookup.addresses("localhost.rdns.test") == ["127.0.0.1"]
    assert lookup.ptr("127.0.0.1") == ["localhost.rdns.test"]
    assert lookup.ptr("::1") == ["ip6-localhost.rdns.test"]
    assert lookup.ptr("127.0.0.4") == []              # no PTR: NXDOMAIN is not an error
    assert lookup.mx("a-only.mx.test") == []          # no MX: NODATA is not an error
    assert lookup.txt("x" * 64 + ".test") == []      # not a valid name: no such record


def test_a_nameserver_that_never_answers_is_a_temp_error_within_the_timeout(resolver):
    started = time.monotonic()
    with pytest.raises(DnsTempError):
        resolver.budget(5).txt(stall_name())
    assert time.monotonic() - started < 1.5            # timeout 0.5s, unbound's SERVFAIL later


def test_a_check_budget_bounds_the_wait(dns_server):
    slow = Resolver([dns_server.nameserver], timeout=5, retries=0)
    started = time.monotonic()
    with pytest.raises(DnsTempError):
        slow.budget(0.3).txt(stall_name())
    assert time.monotonic() - started < 1.0
    spent = slow.budget(0.001)
    time.sleep(0.01)
    with pytest.raises(DnsTempError, match="budget spent"):
        spent.txt("pass.spf.test")                     # cached or not: no time left


def test_answers_are_cached_for_their_ttl_only(dns_server):
    resolver = Resolver([dns_server.nameserver], timeout=1, retries=0, cache_size=100)
    dns_server.add_records(['short.cache 1 TXT "one"', 'long.cache 300 TXT "one"'])
    lookup = resolver.budget(5)
    assert lookup.txt("short.cache.test") == ["one"]
    assert lookup.txt("long.cache.test") == ["one"]
    dns_server.add_records(['short.cache 1 TXT "two"', 'long.cache 300 TXT "two"'])
    time.sleep(1.2)
    assert sorted(lookup.txt("short.cache.test")) == ["one", "two"]   # TTL 1s: asked again
    assert lookup.txt("long.cache.test") == ["one"]                   # still cached


def test_the_cache_is_bounded(dns_server):
    resolver = Resolver([dns_server.nameserver], timeout=1, retries=0, cache_size=1)
    dns_server.add_records(['bounded.cache 300 TXT "one"'])
    lookup = resolver.budget(5)
    assert lookup.txt("bounded.cache.test") == ["one"]
    assert lookup.txt("pass.spf.test")                 # evicts the only other entry
    dns_server.add_records(['bounded.cache 300 TXT "two"'])
    assert sorted(lookup.txt("bounded.cache.test")) == ["one", "two"]


def test_the_resolver_and_its_cache_survive_a_reload_with_the_same_dns_table():
    from appliance.config import Dns
    from appliance.dns import ResolverKeeper

    keeper = ResolverKeeper()
    first = keeper.resolver_for(Dns(nameservers=["127.0.0.1:53"]))
    assert keeper.resolver_for(Dns(nameservers=["127.0.0.1:53"])) is first
    changed = keeper.resolver_for(Dns(nameservers=["127.0.0.1:5353"]))
    assert changed is not first and changed.nameservers == ["Do53:127.0.0.1@5353"]


def test_dns_table_errors_name_the_file_and_key(tmp_path):
    from appliance.config import ConfigError, load_config

    (tmp_path / "60-dns.toml").write_text(
        '[dns]\nnameservers = ["ns.example.org"]\ntimeout = "0s"\nretries = -1\n'
        'cache_sizes = 5\n')
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    text = "\n".join(caught.value.errors)
    assert "60-dns.toml: dns.nameservers: expected a list of nameservers" in text
    assert "60-dns.toml: dns.timeout: expected a duration longer than 0s" in text
    assert "60-dns.toml: dns.retries: expected an integer of at least 0" in text
    assert "60-dns.toml: dns.cache_sizes: unknown key" in text
