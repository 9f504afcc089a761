"""A private, real Dovecot LMTP server (Debian's dovecot-lmtpd) delivering into
Maildirs under its own directory: the delivery tests' final next hop. Users are
listed in a passwd-file userdb, so an unknown recipient gets Dovecot's own 550."""

from __future__ import annotations

import email
import email.policy
import os
import socket
from pathlib import Path

import pytest

from tests.dovecot_fixture import Dovecot
from tests.peers import free_port

DOMAIN = "test.example"
USERS = ("alice", "bob", "carol")

CONF = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = lmtp
ssl = no
listen = 127.0.0.1
first_valid_uid = 1
mail_location = maildir:~/Maildir
postmaster_address = postmaster@{domain}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/users
}}
userdb {{
  driver = passwd-file
  args = {root}/users
  default_fields = uid=nobody gid=nogroup home={root}/mail/%d/%n
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"""


class DovecotLmtp(Dovecot):
    """``inet``/``unix`` give the LMTP endpoints; ``messages(user)`` reads a Maildir."""

    def __init__(self) -> None:
        super().__init__()
        self.port = free_port()
        self.unix_socket = self.root / "run" / "lmtp"
        self.conf.write_text(CONF.format(root=self.root, port=self.port, domain=DOMAIN))
        users = self.root / "users"
        users.write_text("".join(f"{u}@{DOMAIN}:{{PLAIN}}x::::::\n" for u in USERS))
        users.chmod(0o644)
        mail = self.root / "mail"
        mail.mkdir()
        mail.chmod(0o777)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                return s.recv(100).startswith(b"220 ")
        except OSError:
            return False

    def maildir(self, user: str) -> Path:
        return self.root / "mail" / DOMAIN / user / "Maildir"

    def messages(self, user: str) -> list[email.message.EmailMessage]:
        """Every message in the user's INBOX (new/ and cur/), parsed."""
        found = []
        for sub in ("new", "cur"):
            d = self.maildir(user) / sub
            for p in sorted(d.iterdir()) if d.is_dir() else ():
                found.append(email.message_from_bytes(p.read_bytes(),
                                                      policy=email.policy.default))
        return found


@pytest.fixture
def lmtp():
    """A running private Dovecot LMTP server; stopped and removed after the test."""
    if os.geteuid() != 0:
        pytest.skip("the private dovecot needs root (it drops to its own users)")
    server = DovecotLmtp()
    try:
        yield server.start()
    finally:
        server.cleanup()
