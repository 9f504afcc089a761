"""appliance.netlist: parsing entries and files, merging, lookups at the boundaries,
and a property test against a naive matcher built on the standard ipaddress module."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.netlist import (
    ENTRY_EXPECTED,
    ListFileError,
    NetList,
    address_key,
    parse_entry,
    parse_lines,
    parse_texts,
    read_file,
)


def nl(*texts: str) -> NetList:
    return NetList.from_texts(texts, "t")


# --- parsing -------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("192.0.2.7", (4, 0xC0000207, 0xC0000207)),
    (" 192.0.2.7 ", (4, 0xC0000207, 0xC0000207)),
    ("10.0.0.0/8", (4, 0x0A000000, 0x0AFFFFFF)),
    ("0.0.0.0/0", (4, 0, 2**32 - 1)),
    ("192.0.2.7/32", (4, 0xC0000207, 0xC0000207)),
    ("10.0.0.5-10.0.0.99", (4, 0x0A000005, 0x0A000063)),
    ("10.0.0.5 - 10.0.0.5", (4, 0x0A000005, 0x0A000005)),
    ("::1", (6, 1, 1)),
    ("::/0", (6, 0, 2**128 - 1)),
    ("2001:db8::/32", (6, 0x20010DB8 << 96, (0x20010DB8 << 96) | (2**96 - 1))),
    ("2001:db8::1/128", (6, (0x20010DB8 << 96) | 1, (0x20010DB8 << 96) | 1)),
    ("2001:db8::1-2001:db8::ff", (6, (0x20010DB8 << 96) | 1, (0x20010DB8 << 96) | 0xFF)),
])
def test_parse_entry(text, expected):
    assert parse_entry(text) == expected


@pytest.mark.parametrize("text, message", [
    ("", ENTRY_EXPECTED),
    ("example.com", ENTRY_EXPECTED),
    ("10.0.0.256", ENTRY_EXPECTED),
    ("10.0.0", ENTRY_EXPECTED),
    ("010.0.0.1", ENTRY_EXPECTED),
    ("10.0.0.1\x00", ENTRY_EXPECTED),
    ("10.0.0.0/33", "a prefix length from 0 to 32"),
    ("2001:db8::/129", "a prefix length from 0 to 128"),
    ("10.0.0.0/", "a prefix length from 0 to 32"),
    ("10.0.0.0/-1", "a prefix length from 0 to 32"),
    ("10.0.0.0/８", "a prefix length from 0 to 32"),  # a full-width digit
    ("10.1.2.3/8", "a network address without host bits (did you mean 10.0.0.0/8?)"),
    ("2001:db8::1/32", "did you mean 2001:db8::/32?"),
    ("10.0.0.9-10.0.0.1", "a range whose first address is not above its last"),
    ("10.0.0.1-::1", "a range whose two ends are both IPv4 or both IPv6"),
    ("10.0.0.1-", ENTRY_EXPECTED),
    ("fe80::1%eth0", ENTRY_EXPECTED),
])
def test_parse_entry_errors(text, message):
    with pytest.raises(ValueError) as exc:
        parse_entry(text)
    assert message in str(exc.value)


def test_file_comments_blank_lines_and_line_numbers(tmp_path):
    f = tmp_path / "deny.txt"
    f.write_text("# office\n\n10.0.0.0/8   # all of it\n   \n2001:db8::1\n")
    entries = read_file(f)
    assert [(e[3], e[4]) for e in entries] == [
        ("10.0.0.0/8", f"{f}:3"), ("2001:db8::1", f"{f}:5")]


def test_file_error_names_file_line_and_what_was_expected(tmp_path):
    f = tmp_path / "deny.txt"
    f.write_text("10.0.0.0/8\n# fine\n10.0.0.300\n")
    with pytest.raises(ListFileError) as exc:
        read_file(f)
    assert str(exc.value) == f'{f}:3: expected {ENTRY_EXPECTED} (got "10.0.0.300")'


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(ListFileError, match=r"nope\.txt: cannot be read \(No such file"):
        read_file(tmp_path / "nope.txt")
    (tmp_path / "bin").write_bytes(b"\xff\xfe10.0.0.1\n")
    with pytest.raises(ListFileError, match="not valid UTF-8"):
        read_file(tmp_path / "bin")


def test_inline_error_names_the_index():
    with pytest.raises(ValueError, match=r'access.deny\[1\]: expected .* \(got "nonsense"\)'):
        parse_texts(["10.0.0.1", "nonsense"], "access.deny")


# --- lookups at the boundaries -------------------------------------------------------------


def test_range_first_and_last_address():
    n = nl("10.0.0.5-10.0.0.99")
    assert "10.0.0.4" not in n
    assert "10.0.0.5" in n
    assert "10.0.0.99" in n
    assert "10.0.0.100" not in n


def test_cidr_edges_v4_and_v6():
    n = nl("192.168.0.0/16", "2001:db8::/32")
    assert "192.167.255.255" not in n
    assert "192.168.0.0" in n and "192.168.255.255" in n
    assert "192.169.0.0" not in n
    assert "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff" not in n
    assert "2001:db8::" in n and "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff" in n
    assert "2001:db9::" not in n


def test_slash_0_32_128():
    assert "255.255.255.255" in nl("0.0.0.0/0") and "0.0.0.0" in nl("0.0.0.0/0")
    assert "::1" not in nl("0.0.0.0/0")  # families do not mix
    assert "ffff::1" in nl("::/0") and "10.0.0.1" not in nl("::/0")
    assert "10.0.0.1" in nl("10.0.0.1/32") and "10.0.0.2" not in nl("10.0.0.1/32")
    assert "::2" in nl("::2/128") and "::3" not in nl("::2/128") and "::1" not in nl("::2/128")


def test_adjacent_and_overlapping_entries_merge():
    n = nl("10.0.0.0-10.0.0.9", "10.0.0.10-10.0.0.19", "10.0.0.15-10.0.0.30",
           "10.0.0.2", "10.0.0.32-10.0.0.40")
    assert n.intervals == 2  # 0..30 (adjacent + overlap + inside), 32..40
    assert len(n) == 5
    assert "10.0.0.30" in n and "10.0.0.31" not in n and "10.0.0.32" in n


def test_match_names_the_entry_that_holds_the_address():
    n = nl("10.0.0.0/8", "10.1.0.0/16", "192.0.2.1")
    assert n.match("10.1.2.3")[3:] == ("10.0.0.0/8", "t[0]")  # first by start
    assert n.match("192.0.2.1")[3:] == ("192.0.2.1", "t[2]")
    n = nl("10.0.0.0-10.0.0.10", "10.0.0.5-10.0.0.20")
    assert n.match("10.0.0.15")[3] == "10.0.0.5-10.0.0.20"
    assert n.match("10.0.0.21") is None


def test_match_in_big_merged_intervals():
    # 1,000 adjacent single addresses merge into one interval; each still names itself.
    singles = [f"10.0.{i // 256}.{i % 256}" for i in range(1000)]
    n = nl(*singles)
    assert n.intervals == 1
    assert n.match("10.0.3.231")[3] == "10.0.3.231"
    # A wide entry first, many narrow ones inside it: the wide one holds the gaps.
    n = nl("10.0.0.0/8", *(f"10.9.{i}.1" for i in range(200)))
    assert n.match("10.9.199.2")[3] == "10.0.0.0/8"
    assert n.match("10.9.199.1")[3] == "10.0.0.0/8"  # the first holding entry, by start


def test_ipv4_mapped_client_matches_ipv4_entries():
    n = nl("192.0.2.0/24")
    assert "::ffff:192.0.2.7" in n
    assert "::ffff:192.0.3.7" not in n
    assert "::192.0.2.7" not in n  # IPv4-compatible is not mapped
    assert "64:ff9b::192.0.2.7" not in n
    assert "::ffff:10.0.0.1" in nl("::ffff:0:0/96")  # an IPv6 entry still counts


def test_client_addresses_that_are_not_addresses_match_nothing():
    n = nl("0.0.0.0/0", "::/0")
    assert "" not in n and "unix:/x" not in n
    assert "fe80::1%eth0" in n  # the zone is not part of the address
    assert address_key("fe80::1%eth0") == (6, (0xFE80 << 112) | 1)


def test_empty_list():
    n = NetList()
    assert "10.0.0.1" not in n and "::1" not in n and len(n) == 0


def test_parse_lines_without_a_file():
    entries = parse_lines(["10.0.0.1\n", "# x\n", "::1 # loopback\n"], "inline")
    assert [e[4] for e in entries] == ["inline:1", "inline:3"]


# --- property test: the same answers as a naive ipaddress matcher -------------------------

V4 = st.integers(0, 2**32 - 1)
V6 = st.integers(0, 2**128 - 1)


def _network(family: int):
    bits = 32 if family == 4 else 128
    addr = V4 if family == 4 else V6
    make = ipaddress.IPv4Network if family == 4 else ipaddress.IPv6Network
    return st.tuples(addr, st.integers(0, bits)).map(
        lambda t: str(make((t[0] >> (bits - t[1]) << (bits - t[1]), t[1]))))


def _range(family: int):
    addr = V4 if family == 4 else V6
    make = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    return st.tuples(addr, addr).map(lambda t: f"{make(min(t))}-{make(max(t))}")


def _single(family: int):
    addr = V4 if family == 4 else V6
    make = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    return addr.map(lambda v: str(make(v)))


ENTRIES = st.one_of(*(f(fam) for f in (_network, _range, _single) for fam in (4, 6)))


def naive(entries: list[str], address: str) -> bool:
    ip = ipaddress.ip_address(address)
    candidates = [ip]
    if ip.version == 6 and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    for text in entries:
        for c in candidates:
            if "-" in text:
                a, b = (ipaddress.ip_address(x) for x in text.split("-"))
                if a.version == c.version and a <= c <= b:
                    return True
            else:
                net = ipaddress.ip_network(text)
                if net.version == c.version and c in net:
                    return True
    return False


def _probes(entries: list[str]) -> list[str]:
    """Addresses on and next to every entry's edges: where off-by-ones live."""
    out = []
    for text in entries:
        _, start, end = parse_entry(text)
        family = 6 if ":" in text else 4
        top = 2**32 - 1 if family == 4 else 2**128 - 1
        make = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
        for v in (start - 1, start, end, end + 1):
            if 0 <= v <= top:
                out.append(str(make(v)))
                if family == 4:
                    out.append(f"::ffff:{make(v)}")
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(ENTRIES, max_size=20), st.lists(st.one_of(V4.map(
    lambda v: str(ipaddress.IPv4Address(v))), V6.map(lambda v: str(ipaddress.IPv6Address(v)))),
    max_size=10))
def test_same_answers_as_naive_matcher(entries, extra_probes):
    n = NetList.from_texts(entries, "p")
    for address in _probes(entries) + extra_probes:
        assert (address in n) == naive(entries, address), (entries, address)
        m = n.match(address)
        if m is not None:
            assert naive([m[3]], address)  # the entry it names does hold the address


@settings(max_examples=200, deadline=None)
@given(st.lists(ENTRIES, max_size=30))
def test_merged_intervals_are_sorted_and_disjoint(entries):
    n = NetList.from_texts(entries, "p")
    for fam in (n.v4, n.v6):
        for i in range(1, len(fam.starts)):
            assert fam.ends[i - 1] + 1 < fam.starts[i]  # not even adjacent
        assert all(s <= e for s, e in zip(fam.starts, fam.ends, strict=True))
