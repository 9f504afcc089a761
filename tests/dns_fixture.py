"""A real DNS server for the tests: Debian's unbound on a free loopback port,
serving zone files written here (auth-zone), and a "stalled" domain delegated
(stub-zone) to a loopback socket that never answers, for TempError.

Tests point the appliance at it with ``dns_server.toml()`` (a ``[dns]`` table).
A test module adds its own records (DKIM keys, ``_dmarc`` TXT) with
``dns_server.add_records([...], zone="test.")``: the zone file is rewritten and
unbound reloaded. Records are zone-file lines; names are relative to the zone
unless they end with a dot.

Client addresses the zones know about (connect from them with
``source_address=(ip, 0)``: any 127/8 address works on Linux loopback):

====================  ===============================================================
127.0.0.1             PTR localhost.rdns.test, which resolves back: FCrDNS confirmed
127.0.0.2             listed in dnsbl.test (127.0.0.2 + TXT) and dnsbl2.test
127.0.0.3             PTR mismatch.rdns.test, whose A is 192.0.2.3: not confirmed
127.0.0.4             no PTR
127.0.0.5             listed in dnswl.test (127.0.10.0) and in dnsbl.test
127.0.0.6             in dnsbl.test with 127.0.0.10, a code the tests do not count
127.0.0.7             listed in dnsbl2.test only
::1                   PTR ip6-localhost.rdns.test (AAAA ::1); listed in dnsbl.test
====================  ===============================================================
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest

from tests.peers import free_port, stop_process

#: The domain delegated to a server that never answers: any name under it times out.
STALL_DOMAIN = "stall.example"


def stall_name(prefix: str = "t") -> str:
    """A name under STALL_DOMAIN nobody asked for yet. unbound gives up on the silent
    server after some seconds and then answers SERVFAIL at once for a name it has
    tried: a test that needs a lookup to hang uses a fresh name (SERVFAIL is a
    TempError too, but comes at once)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}.{STALL_DOMAIN}"

_NIBBLES_V6_LOOPBACK = ".".join("1" + "0" * 31)  # ::1, reversed nibbles

#: zone origin -> zone-file lines (relative names). The SOA/NS are added.
ZONES: dict[str, list[str]] = {
    "test.": [
        # --- SPF (client 127.0.0.1 unless a test says otherwise) -------------------
        'pass.spf         TXT "v=spf1 ip4:127.0.0.0/24 ip6:::1 -all"',
        'fail.spf         TXT "v=spf1 ip4:192.0.2.1 exp=why.fail.spf.test -all"',
        'why.fail.spf     TXT "%{d} does not authorize %{i} to send mail for it"',
        'softfail.spf     TXT "v=spf1 ip4:192.0.2.1 ~all"',
        'neutral.spf      TXT "v=spf1 ?all"',
        'include.spf      TXT "v=spf1 include:pass.spf.test -all"',
        'redirect.spf     TXT "v=spf1 redirect=fail.spf.test"',
        'redirect-pass.spf TXT "v=spf1 redirect=pass.spf.test"',
        # macros: %{ir}.%{l} -> 1.0.0.127.alice.allow.macro.spf.test exists for alice
        'macro.spf        TXT "v=spf1 exists:%{ir}.%{l}.allow.macro.spf.test -all"',
        "1.0.0.127.alice.allow.macro.spf A 127.0.0.2",
        # 11 DNS mechanisms: over RFC 7208's limit of 10 lookups -> PermError
        'toomany.spf      TXT "v=spf1 ' + " ".join(f"a:a{i}.spf.test" for i in range(1, 12))
        + ' -all"',
        *(f"a{i}.spf A 192.0.2.{i}" for i in range(1, 12)),
        'syntax.spf       TXT "v=spf1 ip4:127.0.0.1/99 -all"',
        "none.spf         A 192.0.2.50",
        # %{l}: each test's own name under the stalled domain (see stall_name)
        'tempfail.spf     TXT "v=spf1 include:%{l}.stall.example -all"',
        'helo.spf         TXT "v=spf1 a:helo.spf.test -all"',
        "helo.spf         A 127.0.0.1",
        # every SPF test domain can receive mail (the sender MX check passes)
        *(f"{d}.spf MX 10 mail.mx.test." for d in (
            "pass", "fail", "softfail", "neutral", "include", "redirect", "redirect-pass",
            "macro", "toomany", "syntax", "none", "tempfail", "helo")),
        # --- sender MX ---------------------------------------------------------------
        "has-mx.mx        MX 10 mail.mx.test.",
        "mail.mx          A 192.0.2.25",
        "a-only.mx        A 192.0.2.26",
        'no-address.mx    TXT "neither MX nor A"',
        "null-mx.mx       MX 0 .",
        # --- DNSBL / DNSWL -----------------------------------------------------------
        "2.0.0.127.dnsbl  A 127.0.0.2",
        '2.0.0.127.dnsbl  TXT "127.0.0.2 is listed, see https://dnsbl.test/q?127.0.0.2"',
        "5.0.0.127.dnsbl  A 127.0.0.2",
        '5.0.0.127.dnsbl  TXT "127.0.0.5 is listed"',
        "6.0.0.127.dnsbl  A 127.0.0.10",
        f"{_NIBBLES_V6_LOOPBACK}.dnsbl A 127.0.0.2",
        f'{_NIBBLES_V6_LOOPBACK}.dnsbl TXT "::1 is listed"',
        "2.0.0.127.dnsbl2 A 127.0.0.2",
        "7.0.0.127.dnsbl2 A 127.0.0.2",
        '7.0.0.127.dnsbl2 TXT "127.0.0.7 is listed in dnsbl2"',
        "5.0.0.127.dnswl  A 127.0.10.0",
        '5.0.0.127.dnswl  TXT "127.0.0.5 is a known good sender"',
        # --- reverse DNS ---------------------------------------------------------------
        "localhost.rdns   A 127.0.0.1",
        "mismatch.rdns    A 192.0.2.3",
        "ip6-localhost.rdns AAAA ::1",
    ],
    "127.in-addr.arpa.": [
        "1.0.0            PTR localhost.rdns.test.",
        "3.0.0            PTR mismatch.rdns.test.",
    ],
    "ip6.arpa.": [
        f"{_NIBBLES_V6_LOOPBACK} PTR ip6-localhost.rdns.test.",
    ],
}


def find_unbound() -> str | None:
    return shutil.which("unbound") or (
        "/usr/sbin/unbound" if Path("/usr/sbin/unbound").exists() else None)


class SilentServer:
    """A loopback UDP and TCP socket that accept queries and never answer."""

    def __init__(self) -> None:
        self.port = free_port()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(64)

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


class DnsServer:
    """One unbound process with the test zones; ``nameserver`` is "127.0.0.1:PORT"."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.nameserver = f"127.0.0.1:{self.port}"
        self.zones = {origin: list(lines) for origin, lines in ZONES.items()}
        self.silent = SilentServer()
        self.proc: subprocess.Popen | None = None
        self.conf = directory / "unbound.conf"

    # --- what tests use ---------------------------------------------------------------

    def toml(self, timeout: str = "1s", retries: int = 0) -> str:
        """A ``[dns]`` table that points the appliance at this server."""
        return (f'[dns]\nnameservers = ["{self.nameserver}"]\n'
                f'timeout = "{timeout}"\nretries = {retries}\n')

    def add_records(self, records: list[str], zone: str = "test.") -> None:
        """Add zone-file lines to ``zone`` (a new zone is created) and reload."""
        zone = zone if zone.endswith(".") else zone + "."
        self.zones.setdefault(zone, []).extend(records)
        self._write()
        self._control("reload")
        self._wait_answering()

    def query(self, name: str, rdtype: str = "A", timeout: float = 2) -> list[str]:
        """Ask the server directly (for the tests' own checks)."""
        q = dns.message.make_query(name, dns.rdatatype.from_text(rdtype))
        r = dns.query.udp(q, "127.0.0.1", timeout=timeout, port=self.port)
        return [rd.to_text() for rrset in r.answer for rd in rrset]

    # --- process ----------------------------------------------------------------------

    def start(self) -> DnsServer:
        binary = find_unbound()
        if binary is None:
            pytest.fail("unbound is not installed: run `make deps-system`")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write()
        self.proc = subprocess.Popen(
            [binary, "-d", "-p", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL, stderr=open(self.directory / "unbound.log", "ab"))
        self._wait_answering()
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        self.silent.close()

    def _wait_answering(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.directory / "unbound.log").read_text(errors="replace")
                pytest.fail(f"unbound exited with {self.proc.returncode}:\n{log}")
            try:
                if self.query("pass.spf.test", "TXT", timeout=0.1):
                    return
            except (OSError, dns.exception.Timeout):
                pass
            time.sleep(0.02)
        pytest.fail("unbound did not answer within 10 s")

    def _control(self, *args: str) -> None:
        subprocess.run(["unbound-control", "-c", str(self.conf), *args], check=True,
                       capture_output=True, timeout=10)

    def _write(self) -> None:
        d = self.directory
        parts = [
            "server:",
            f"  interface: 127.0.0.1@{self.port}",
            f"  port: {self.port}",
            "  do-ip6: no",
            "  do-daemonize: no",
            "  use-syslog: no",
            '  username: ""',
            '  chroot: ""',
            f'  directory: "{d}"',
            f'  pidfile: "{d}/unbound.pid"',
            "  num-threads: 1",
            "  verbosity: 0",
            '  module-config: "iterator"',
            "  do-not-query-localhost: no",
            "  qname-minimisation: no",
            "  access-control: 127.0.0.0/8 allow",
            # unbound answers these itself by default (RFC 6761 / localhost zones)
            '  local-zone: "test." nodefault',
            '  local-zone: "127.in-addr.arpa." nodefault',
            f'  local-zone: "{_NIBBLES_V6_LOOPBACK}.ip6.arpa." nodefault',
            # a stalled server is retried quickly, never cached as down for long
            "  infra-host-ttl: 1",
            "  infra-keep-probing: yes",
            "  infra-cache-min-rtt: 50",
            "remote-control:",
            "  control-enable: yes",
            f'  control-interface: "{d}/control.sock"',
            "  control-use-cert: no",
            "stub-zone:",
            f'  name: "{STALL_DOMAIN}."',
            f"  stub-addr: 127.0.0.1@{self.silent.port}",
        ]
        for origin, lines in self.zones.items():
            path = d / f"{origin.rstrip('.') or 'root'}.zone"
            path.write_text(_zone_text(origin, lines))
            parts += ["auth-zone:", f'  name: "{origin}"', f'  zonefile: "{path}"',
                      "  for-downstream: yes", "  for-upstream: yes",
                      "  fallback-enabled: no"]
        self.conf.write_text("\n".join(parts) + "\n")


def _zone_text(origin: str, lines: list[str]) -> str:
    head = [
        f"$ORIGIN {origin}",
        "$TTL 300",
        f"@ SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 60",
        f"@ NS ns.{origin}",
        f"ns.{origin} A 127.0.0.1" if origin.endswith("test.") else "",
    ]
    return "\n".join([*head, *lines]) + "\n"


@pytest.fixture(scope="session")
def dns_server(tmp_path_factory):
    """The test zones on a real unbound, shared by the whole test session."""
    server = DnsServer(tmp_path_factory.mktemp("dns")).start()
    yield server
    server.stop()
