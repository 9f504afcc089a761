"""A private Postfix as the delivery service's SMTP next hop: its smtpd on a
loopback port (STARTTLS offered when given a certificate), recipients of
test.example handed on to the private Dovecot LMTP server, and two recipients
refused by an access map: ``later@`` with 450, ``refused@`` with 550."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench.private_postfix import PrivatePostfix
from tests.integration.postfix import MASTER_CF as RELAY_MASTER_CF
from tests.peers import free_port

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/spool
data_directory = {dir}/data
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
myhostname = nexthop.test.example
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
biff = no
disable_dns_lookups = yes
smtp_dns_support_level = disabled
virtual_mailbox_domains = {domain}
virtual_transport = lmtp:unix:{lmtp}
smtpd_recipient_restrictions = check_recipient_access texthash:{dir}/etc/access,
    permit_mynetworks, reject
delay_warning_time = 0
in_flow_delay = 0s
{tls}
"""

TLS = """\
smtpd_tls_security_level = may
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
"""

# The relay's services, plus an smtpd on the port and the lmtp client.
MASTER_CF = ("127.0.0.1:{port} inet n - n - - smtpd\n" + RELAY_MASTER_CF
             + "lmtp      unix  -       -       n       -       -       lmtp\n")

ACCESS = """\
later@{domain} 450 4.2.0 Mailbox busy, try again later
refused@{domain} 550 5.1.1 No such user here
"""


class PostfixNextHop(PrivatePostfix):
    def __init__(self, lmtp_socket: Path, domain: str) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="pfn-", dir="/tmp")))
        self.port = free_port()
        self.lmtp_socket, self.domain = lmtp_socket, domain

    @property
    def inet(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    def start(self, cert: Path | None = None, key: Path | None = None,  # type: ignore[override]
              sasl: str = "") -> PostfixNextHop:
        """``sasl``: a Dovecot auth socket (inet:host:port) for AUTH, offered after TLS."""
        tls = TLS.format(cert=cert, key=key) if cert else ""
        if sasl:
            tls += (f"smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\n"
                    f"smtpd_sasl_path = {sasl}\nsmtpd_tls_auth_only = yes\n")
        main = MAIN_CF.format(dir=self.dir, domain=self.domain, lmtp=self.lmtp_socket, tls=tls)
        super().start(main, MASTER_CF.format(port=self.port),
                      {"access": ACCESS.format(domain=self.domain)})
        return self

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
