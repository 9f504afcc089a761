"""The cost of the PROXY protocol per connection, in microseconds: parsing a header
(``appliance/protocol/proxy.py``), and the listener's whole read of it from a socket
(``appliance/server/proxied.py``: peek, parse, take exactly its bytes) on a loopback
TCP connection. CPU only, no network; run it on a quiet machine.

    .venv/bin/python bench/proxy_header.py [--count 100000]
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.netlist import NetList  # noqa: E402
from appliance.protocol.proxy import V2_SIGNATURE, parse_header  # noqa: E402
from appliance.server.proxied import arrive  # noqa: E402

V1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 25\r\n"


def _tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def _v2(tlvs: bytes = b"") -> bytes:
    body = (socket.inet_aton("192.0.2.7") + socket.inet_aton("198.51.100.1")
            + struct.pack("!HH", 40001, 25) + tlvs)
    return V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(body)) + body


HEADERS = {
    "v1 TCP4": V1,
    "v2 TCP4": _v2(),
    "v2 TCP4 + authority, unique id, SSL": _v2(
        _tlv(0x02, b"mail.example.org") + _tlv(0x05, b"x" * 32)
        + _tlv(0x20, struct.pack("!BI", 1, 0) + _tlv(0x21, b"TLSv1.3")
               + _tlv(0x23, b"TLS_AES_256_GCM_SHA384"))),
}


def per_call_us(fn, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - start) / count * 1e6


def socket_read(header: bytes, count: int) -> float:
    """arrive() on the accepted end of a loopback TCP connection, the header written
    to the other end."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        b = socket.create_connection(server.getsockname())
        a, _ = server.accept()
    trusted = NetList.from_texts(["127.0.0.1"])
    address = ("127.0.0.1", 40000)
    try:
        def once() -> None:
            b.sendall(header)
            arrival = arrive(a, address, "bench", "any", trusted, 5.0)
            assert arrival is not None and arrival.client[0] == "192.0.2.7"

        return per_call_us(once, count)
    finally:
        a.close()
        b.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    args = parser.parse_args(argv)
    print(f"{'header':40} {'bytes':>5} {'parse µs':>9} {'socket read µs':>15}")
    for name, header in HEADERS.items():
        parse = per_call_us(lambda h=header: parse_header(h), args.count)
        read = socket_read(header, max(1, args.count // 10))
        print(f"{name:40} {len(header):5} {parse:9.2f} {read:15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
