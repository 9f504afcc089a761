"""Access-list benchmark: load time and lookups per second of appliance.netlist.

Builds N random entries (IPv4 CIDRs, IPv4 ranges, single IPv4 addresses and IPv6
CIDRs/ranges/addresses), writes them to a list file, and measures:

* load: reading and parsing the file plus compiling it into merged intervals
  (what the appliance does for ``deny_file`` at start and on each SIGHUP);
* lookups/second of ``address in netlist`` (parse the client address + binary
  search) for random client addresses, hits and misses mixed;
* the same lookups with a naive linear scan over the first n entries, for growing
  n, next to the compiled list of those n entries: the scan slows down in
  proportion to n, the compiled list stays flat (O(log n)).

Each figure is the median of ``--runs`` runs, timed in CPU seconds of this
process. Standard library plus the appliance only:

    .venv/bin/python bench/access_lookup.py                 # 100,000 entries, 5 runs
    .venv/bin/python bench/access_lookup.py --entries 1000000 --runs 3
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance_plugins.access import AccessArea, AccessPlugin  # noqa: E402

from appliance.config import AppConfig, Listener  # noqa: E402
from appliance.mail.context import SessionContext  # noqa: E402
from appliance.netlist import NetList, address_key, parse_entry, read_file  # noqa: E402


def random_entries(count: int, rng: random.Random) -> list[str]:
    """A mix like a real blocklist: mostly IPv4 networks, some ranges, some IPv6."""
    out = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.45:  # IPv4 CIDR /16../32
            prefix = rng.randint(16, 32)
            value = rng.getrandbits(32) >> (32 - prefix) << (32 - prefix)
            out.append(f"{ipaddress.IPv4Address(value)}/{prefix}")
        elif kind < 0.60:  # IPv4 range of up to 1000 addresses
            start = rng.getrandbits(32)
            end = min(start + rng.randint(0, 1000), 2**32 - 1)
            out.append(f"{ipaddress.IPv4Address(start)}-{ipaddress.IPv4Address(end)}")
        elif kind < 0.75:  # single IPv4 address
            out.append(str(ipaddress.IPv4Address(rng.getrandbits(32))))
        elif kind < 0.90:  # IPv6 CIDR /32../128 inside 2000::/3
            prefix = rng.randint(32, 128)
            value = ((1 << 125) | rng.getrandbits(125)) >> (128 - prefix) << (128 - prefix)
            out.append(f"{ipaddress.IPv6Address(value)}/{prefix}")
        elif kind < 0.95:  # IPv6 range
            start = (1 << 125) | rng.getrandbits(125)
            end = start + rng.getrandbits(64)
            out.append(f"{ipaddress.IPv6Address(start)}-{ipaddress.IPv6Address(end)}")
        else:  # single IPv6 address
            out.append(str(ipaddress.IPv6Address((1 << 125) | rng.getrandbits(125))))
    return out


def random_clients(entries: list[str], count: int, rng: random.Random) -> list[str]:
    """Client addresses: a quarter inside some entry (hits), the rest random."""
    out = []
    for i in range(count):
        if i % 4 == 0:
            family, start, end = parse_entry(rng.choice(entries))
            value = rng.randint(start, end)
            make = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
            out.append(str(make(value)))
        elif i % 4 == 1:
            out.append(str(ipaddress.IPv6Address((1 << 125) | rng.getrandbits(125))))
        else:
            out.append(str(ipaddress.IPv4Address(rng.getrandbits(32))))
    return out


class LinearScan:
    """The naive matcher: every entry checked in turn (integers, no ipaddress)."""

    def __init__(self, entries: list[str]) -> None:
        self.entries = [parse_entry(e) for e in entries]

    def __contains__(self, address: str) -> bool:
        key = address_key(address)
        if key is None:
            return False
        family, value = key
        return any(f == family and s <= value <= e for f, s, e in self.entries)


def timed(fn) -> float:
    """CPU seconds of this process for ``fn()``: on a shared machine, less disturbed
    by other processes than wall time (everything here is CPU-bound, the list file
    is in the page cache)."""
    started = time.process_time()
    fn()
    return time.process_time() - started


def lookups_per_second(matcher, clients: list[str], runs: int) -> float:
    def run() -> None:
        for address in clients:
            address in matcher  # noqa: B015 - the lookup is what is measured

    return len(clients) / statistics.median(timed(run) for _ in range(runs))


def plugin_seconds_per_connection(path: Path, clients: list[str], runs: int) -> float:
    """What the access plugin costs a connection: ``on_connect`` with ``deny_file``
    (and a small ``allow``), both lists consulted for a client on neither."""
    area = AccessArea(deny_file=str(path), allow=["192.0.2.0/24"])
    plugin = AccessPlugin(AccessPlugin.Config())
    plugin.on_configure(AppConfig(listeners={"mta": Listener(port=25, areas={"access": area})},
                                  areas={"access": area}))
    sessions = [SessionContext(session_id="S", listener="mta", local_ip="127.0.0.1",
                               local_port=25, remote_ip=ip, remote_port=1)
                for ip in clients]

    def run() -> None:
        for session in sessions:
            plugin.on_connect(session)

    return statistics.median(timed(run) for _ in range(runs)) / len(sessions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--scan-sizes", default="100,1000,10000",
                        help="list sizes for the linear-scan comparison")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)

    entries = random_entries(args.entries, rng)
    clients = random_clients(entries, args.lookups, rng)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deny.txt"
        path.write_text("# benchmark list\n" + "\n".join(entries) + "\n")
        size = os.path.getsize(path)
        holder: list[NetList] = []
        loads = [timed(lambda: holder.append(NetList(read_file(path)))) for _ in range(args.runs)]
        per_connection = plugin_seconds_per_connection(path, clients[:20_000], args.runs)
    netlist = holder[-1]
    hits = sum(address in netlist for address in clients)

    print(f"python {sys.version.split()[0]}, {args.runs} runs each, medians")
    print(f"list: {len(netlist):,} entries ({size / 1e6:.1f} MB file) -> "
          f"{netlist.intervals:,} merged intervals")
    print(f"load (read + parse + compile): {statistics.median(loads) * 1000:.0f} ms "
          f"(min {min(loads) * 1000:.0f}, max {max(loads) * 1000:.0f})")
    rate = lookups_per_second(netlist, clients, args.runs)
    print(f"lookups: {rate:,.0f}/s = {1e6 / rate:.2f} us each "
          f"({len(clients):,} client addresses, {hits / len(clients):.0%} hits)")
    print(f"access plugin on_connect: {per_connection * 1e6:.2f} us per connection "
          f"(allow and deny lists consulted; refusals logged at info level, logging off)")

    print()
    print("complexity: the same 2,000 client addresses against the first n entries")
    print(f"{'n':>8} {'linear scan/s':>15} {'netlist/s':>12} {'ratio':>8}")
    probe = clients[:2000]
    for n in [int(x) for x in args.scan_sizes.split(",")] + [len(entries)]:
        subset = entries[:n]
        # The scan gets fewer addresses on big lists, so that a run stays short.
        scan = lookups_per_second(LinearScan(subset), probe[: max(100, 200_000 // n)],
                                  args.runs)
        fast = lookups_per_second(NetList.from_texts(subset), probe, args.runs)
        print(f"{n:>8,} {scan:>15,.0f} {fast:>12,.0f} {fast / scan:>7.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
