"""Who counts as one client for flow limits: IPv4 by /32 (or a configured prefix),
IPv6 by /64; IPv4-mapped IPv6 addresses are their IPv4 client."""

import pytest
from appliance_plugins.flow.clients import client_group, in_networks, parse_networks


@pytest.mark.parametrize("ip,v4,v6,group", [
    ("192.0.2.7", 32, 64, "192.0.2.7"),
    ("192.0.2.7", 24, 64, "192.0.2.0/24"),
    ("192.0.2.7", 1, 64, "128.0.0.0/1"),
    ("2001:db8:1:2:aaaa::1", 32, 64, "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", 32, 64, "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", 32, 64, "2001:db8:1:3::/64"),
    ("2001:db8:1:2::1", 32, 48, "2001:db8:1::/48"),
    ("2001:db8::1", 32, 128, "2001:db8::1"),
    ("::1", 32, 64, "::/64"),
    ("::ffff:192.0.2.7", 32, 64, "192.0.2.7"),
    ("::ffff:192.0.2.7", 24, 64, "192.0.2.0/24"),
    ("fe80::1%eth0", 32, 64, "fe80::/64"),
    ("not-an-ip", 32, 64, "not-an-ip"),
])
def test_client_group(ip, v4, v6, group):
    assert client_group(ip, v4, v6) == group


def test_same_64_is_one_client_and_neighbours_are_not():
    a = client_group("2001:db8:0:1::1")
    assert a == client_group("2001:db8:0:1:ffff::9")
    assert a != client_group("2001:db8:0:2::1")
    assert a != client_group("2001:db8:0:0:ffff:ffff:ffff:ffff")


def test_in_networks():
    nets = parse_networks(["192.0.2.0/24", "2001:db8::/32", "198.51.100.7"])
    assert in_networks("192.0.2.0", nets) and in_networks("192.0.2.255", nets)
    assert not in_networks("192.0.3.0", nets)
    assert in_networks("198.51.100.7", nets) and not in_networks("198.51.100.8", nets)
    assert in_networks("2001:db8:ffff::1", nets) and not in_networks("2001:db9::1", nets)
    assert in_networks("::ffff:192.0.2.9", nets)
    assert not in_networks("garbage", nets)
    assert not in_networks("192.0.2.1", ())
