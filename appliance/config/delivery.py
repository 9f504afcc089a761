"""The ``[delivery]`` area: where the delivery service hands spooled messages on
(docs/delivery.md). Next hops are named tables; routes map recipients and domains
to those names."""

from __future__ import annotations

from typing import Annotated, Literal

from attrs import field, frozen

from appliance.clients.endpoints import is_socket
from appliance.config.constraints import Check, at_least
from appliance.config.units import Duration, FilePath, Size

_POSITIVE = Check(lambda value: value > 0, "a duration longer than 0s")


def _is_address(value: str) -> bool:
    return value == "" or is_socket(value)


@frozen(kw_only=True)
class NextHop:
    """One next hop: an LMTP or SMTP server, or local Maildir delivery."""

    protocol: Literal["lmtp", "smtp", "maildir"] = "smtp"
    #: inet:host:port or unix:/path (lmtp, smtp)
    address: Annotated[str, Check(_is_address, "inet:host:port or unix:/path")] = ""
    starttls: Literal["none", "may", "encrypt", "verify"] = "may"
    #: CA certificates to verify the next hop with (starttls = "verify"); "" = the system's
    ca_file: FilePath = FilePath("")
    #: the name its certificate must carry (starttls = "verify"); "" = the host of address
    tls_name: str = ""
    auth_user: str = ""
    #: a file holding the AUTH password (kept out of the config)
    auth_password_file: FilePath = FilePath("")
    #: connections open at once to this next hop
    parallelism: Annotated[int, at_least(1)] = 20
    #: maildir: the mail homes' root; a recipient's Maildir is DIR/domain/local-part
    directory: FilePath = FilePath("")
    #: maildir: the most a mailbox may hold; "0" = no quota
    quota: Size = Size(0)


@frozen(kw_only=True)
class Delivery:
    """The delivery service: routing, timeouts, backoff and lifetimes."""

    #: ``serve`` starts the delivery service as its own process
    enabled: bool = True
    #: next hop name for recipients no other route names; "" = none (kept queued)
    default: str = ""
    #: recipient address -> next hop name
    recipients: dict[str, str] = field(factory=dict)
    #: domain -> next hop name
    domains: dict[str, str] = field(factory=dict)
    next_hops: dict[str, NextHop] = field(factory=dict)
    #: listener name -> next hop (lmtp or smtp) its messages go to before queue
    before_queue: dict[str, str] = field(factory=dict)
    #: before queue, some recipients refused or deferred by the next hop: keep the
    #: message for them in the spool and answer 250, or answer 451 for all
    before_queue_partial: Literal["spool", "tmpfail"] = "spool"
    #: the name given in LHLO/EHLO and as Reporting-MTA of DSNs; "" = this host's name
    hostname: str = ""
    #: how often the spool is looked at for new messages and due retries
    scan_interval: Annotated[Duration, _POSITIVE] = Duration("1s")
    connect_timeout: Annotated[Duration, _POSITIVE] = Duration("30s")
    #: each command's reply, and the greeting
    command_timeout: Annotated[Duration, _POSITIVE] = Duration("5m")
    #: the reply to the end of data (per recipient for LMTP)
    data_timeout: Annotated[Duration, _POSITIVE] = Duration("10m")
    #: an idle connection is kept this long for the next message to the same hop
    idle_timeout: Annotated[Duration, _POSITIVE] = Duration("2s")
    minimal_backoff: Annotated[Duration, _POSITIVE] = Duration("300s")
    maximal_backoff: Annotated[Duration, _POSITIVE] = Duration("4000s")
    #: a recipient deferred for longer than this is bounced
    queue_lifetime: Duration = Duration("5d")
    #: the same for a DSN (a message from the null sender)
    bounce_lifetime: Duration = Duration("5d")
    #: a recipient deferred this long gets a delay DSN, once; "0s" = never
    delay_warning: Duration = Duration("0s")


def route_problems(delivery: Delivery) -> list[tuple[tuple[str, ...], str]]:
    """Routes naming a next hop that is not configured, and next hops missing what
    their protocol needs: (key path, message) pairs for the loader to report."""
    found = []
    hops = delivery.next_hops
    valid = ", ".join(sorted(hops)) or "none configured"
    named = [(("delivery", "default"), delivery.default)] if delivery.default else []
    named += [(("delivery", "recipients", k), v) for k, v in delivery.recipients.items()]
    named += [(("delivery", "domains", k), v) for k, v in delivery.domains.items()]
    for path, name in named:
        if name not in hops:
            found.append((path, f"expected the name of a [delivery.next_hops] table "
                                f"({valid}) (got {name!r})"))
    for listener, name in delivery.before_queue.items():
        path = ("delivery", "before_queue", listener)
        if name not in hops or hops[name].protocol == "maildir":
            lmtp_smtp = ", ".join(sorted(n for n, h in hops.items() if h.protocol != "maildir"))
            found.append((path, f"expected the name of an lmtp or smtp next hop "
                                f"({lmtp_smtp or 'none configured'}) (got {name!r})"))
    for name, hop in hops.items():
        path = ("delivery", "next_hops", name)
        if hop.protocol == "maildir" and not hop.directory:
            found.append(((*path, "directory"), "expected a directory for protocol maildir"))
        if hop.protocol != "maildir" and not hop.address:
            found.append(((*path, "address"),
                          f"expected inet:host:port or unix:/path for protocol {hop.protocol}"))
        if hop.auth_user and not hop.auth_password_file:
            found.append(((*path, "auth_password_file"), "expected a file with auth_user"))
    return found
