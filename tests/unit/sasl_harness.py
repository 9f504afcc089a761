"""Shared pieces of the SASL tests: a real users file, and a stand-in SMTP session.

The stand-in exists because AUTH is not wired into the real session yet (the lead
does that; issue 3). It is the one fake here: a few lines that answer EHLO with
the mechanism under test and pass AUTH lines to ``AuthExchange``, over a real
loopback socket, so that real clients (smtplib, swaks, scramp inside smtplib)
talk to the real mechanisms and the real users file.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path

import pytest

from appliance.sasl import AuthExchange, SASLOptions, create
from appliance.users import UsersFile, make_entry, write_users

HOSTNAME = "mx.example.org"
ALICE, ALICE_PW = "alice@example.org", "pencil"
BOB, BOB_PW = "bob", "hunter2"  # SHA-512-crypt password only
CAROL, CAROL_PW = "carol", "correct horse"  # SCRAM only


@pytest.fixture(scope="session")
def users_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("users") / "users.toml"
    all_five = ["PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "SCRAM-SHA-256"]
    write_users(path, {
        ALICE: make_entry(ALICE, ALICE_PW, all_five, HOSTNAME),
        BOB: make_entry(BOB, BOB_PW, ["PLAIN"], HOSTNAME, scheme="sha512-crypt"),
        CAROL: make_entry(CAROL, CAROL_PW, ["SCRAM-SHA-256"], HOSTNAME),
    })
    return path


@pytest.fixture(scope="session")
def backend(users_path) -> UsersFile:
    return UsersFile(users_path)


@pytest.fixture
def options(backend) -> SASLOptions:
    return SASLOptions(backend=backend, hostname=HOSTNAME)


def run(options: SASLOptions, mechanism: str, initial: str | None, *lines: str):
    """Drive one AUTH exchange: the replies (rendered) and the result."""
    exchange = AuthExchange(create(mechanism, options))
    replies = [exchange.start(initial).render()]
    for line in lines:
        replies.append(exchange.line(line).render())
    return replies, exchange


class AuthServer:
    """Serves one connection at a time: 220, EHLO -> AUTH <mechanisms>, AUTH, QUIT."""

    def __init__(self, options: SASLOptions, mechanisms: list[str]) -> None:
        self.options = options
        self.mechanisms = mechanisms
        self.results: list = []  # Success/Failure of each AUTH exchange
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)
        assert not self.thread.is_alive()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(30)
                try:
                    self._session(conn)
                except OSError:
                    pass

    def _session(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        conn.sendall(f"220 {HOSTNAME} ESMTP test stand-in\r\n".encode())
        exchange = None
        for raw in reader:
            line = raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
            if exchange is not None and not exchange.done:
                conn.sendall(exchange.line(line).render())
                if exchange.done:
                    self.results.append(exchange.result)
                continue
            verb = line.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                conn.sendall(f"250-{HOSTNAME}\r\n250 AUTH {' '.join(self.mechanisms)}\r\n"
                             .encode())
            elif verb == "AUTH":
                words = line.split()
                if len(words) < 2 or words[1].upper() not in self.mechanisms:
                    conn.sendall(b"504 5.5.4 Unrecognized authentication type\r\n")
                    continue
                exchange = AuthExchange(create(words[1], self.options))
                conn.sendall(exchange.start(words[2] if len(words) > 2 else None).render())
                if exchange.done:
                    self.results.append(exchange.result)
            elif verb == "QUIT":
                conn.sendall(b"221 2.0.0 Bye\r\n")
                return
            else:
                conn.sendall(b"502 5.5.1 Not implemented in the stand-in\r\n")


@pytest.fixture
def auth_server(options):
    servers = []

    def start(*mechanisms: str, opts: SASLOptions | None = None) -> AuthServer:
        server = AuthServer(opts or options, list(mechanisms))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def swaks(port: int, mechanism: str, user: str, password: str) -> subprocess.CompletedProcess:
    """The real swaks client, stopping after AUTH."""
    return subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{port}", "--helo", "client.example",
         "--auth", mechanism, "--auth-user", user, "--auth-password", password,
         "--quit-after", "AUTH", "--timeout", "20"],
        capture_output=True, text=True, timeout=60, check=False,
    )
