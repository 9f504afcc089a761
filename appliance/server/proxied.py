"""The PROXY protocol on a listener (``proxy_protocol``, docs/scaling.md): before
anything else, a trusted load balancer names the client it relays.

The header is peeked at, not read, until it is whole (proxy-protocol.txt 9): then
exactly its bytes are taken off the socket, so what follows (the client's TLS
hello on an implicit-TLS listener, or SMTP) stays for the session. A peer outside
``proxy_trusted_networks`` gets ``421 4.7.0`` and the close; a malformed header,
one that does not arrive within ``proxy_timeout``, or a peer that closes first:
the close. Each with a ``proxy_refused`` log line.
"""

from __future__ import annotations

import logging
import socket
import time

import gevent
from attrs import frozen

from appliance import logs
from appliance.netlist import NetList
from appliance.protocol import Reply
from appliance.protocol.proxy import ProxyError, ProxyHeader, parse_header

NOT_TRUSTED = Reply(421, "4.7.0", "Not a trusted proxy, closing connection")
_FIRST_PEEK = 1024
_MAX_HEADER = 16 + 65535
_RETRY = 0.005


@frozen
class Arrival:
    """Who a connection stands for: the real client and the address it connected to
    (from the header, or the socket's own), and the header if there was one."""

    client: tuple
    server: tuple
    header: ProxyHeader | None = None
    proxy: tuple | None = None  # the load balancer's address, when proxied


def arrive(sock: socket.socket, address: tuple, listener: str, mode: str,
           trusted: NetList, timeout: float) -> Arrival | None:
    """The arrival of a new connection; None: refused, logged, to be closed."""
    local = sock.getsockname()
    if mode == "off":
        return Arrival(address[:2], local[:2])
    if address[0] not in trusted:
        _refused(listener, address, "untrusted peer")
        try:
            sock.sendall(NOT_TRUSTED.render())
        except OSError:
            pass
        return None
    try:
        header = _read(sock, mode, time.monotonic() + timeout)
    except ProxyError as exc:
        _refused(listener, address, str(exc))
        return None
    except TimeoutError:
        _refused(listener, address, f"no header within {timeout:g}s")
        return None
    except OSError as exc:
        _refused(listener, address, f"{type(exc).__name__}: {exc}")
        return None
    return Arrival(header.source or address[:2], header.destination or local[:2], header,
                   address[:2])


def _read(sock: socket.socket, mode: str, deadline: float) -> ProxyHeader:
    size = _FIRST_PEEK
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        data = sock.recv(size, socket.MSG_PEEK)
        if not data:
            raise ProxyError("closed before a whole header")
        header = parse_header(data, mode)
        if header is not None:
            break
        if len(data) == size < _MAX_HEADER:
            size = _MAX_HEADER  # a long version 2 header: peek at all of it
        else:
            gevent.sleep(_RETRY)  # part of it so far (it should come at once)
    taken = 0
    while taken < header.length:  # the peeked bytes are there: no wait
        chunk = sock.recv(header.length - taken)
        if not chunk:
            raise ProxyError("closed inside the header")
        taken += len(chunk)
    return header


def _refused(listener: str, address: tuple, reason: str) -> None:
    logs.event("proxy_refused", level=logging.WARNING, listener=listener,
               peer=f"[{address[0]}]:{address[1]}", reason=reason)
