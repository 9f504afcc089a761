"""Started as root without a service manager (``smtp-appliance serve`` from a shell
or an init script), the server binds its listeners with root's right to ports
below 1024, then becomes ``server.user`` / ``server.group`` for good before the
spool is opened and the first client is served. Pre-forked workers are forked
after that, so no code that talks to clients ever runs as root. Under systemd the
unit starts the server as that user already (with CAP_NET_BIND_SERVICE), and
there is nothing to drop."""

from __future__ import annotations

import grp
import logging
import os
import pwd
from collections.abc import Iterable

from attrs import frozen

from appliance import logs
from appliance.config import ConfigError
from appliance.config.schema import AppConfig

__all__ = ["Account", "drop", "resolve"]


@frozen
class Account:
    user: str
    uid: int
    group: str
    gid: int


def _key(config: AppConfig, key: str) -> str:
    return f"{config.origins.get(key) or 'defaults'}: {key}"


def resolve(config: AppConfig) -> Account | None:
    """The account ``server.user`` and ``server.group`` name (the group defaults to
    the user's primary group), or None when ``server.user`` is "". Raises
    :class:`ConfigError` naming the file and key of a user or group this machine
    does not have."""
    server = config.server
    if not server.user:
        if server.group:
            raise ConfigError([f"{_key(config, 'server.group')}: needs server.user "
                               f"(got group {server.group!r} without a user)"])
        return None
    try:
        pw = pwd.getpwnam(server.user)
    except KeyError:
        raise ConfigError([f"{_key(config, 'server.user')}: expected a user of this "
                           f"machine (got {server.user!r}: no such user)"]) from None
    gid, group = pw.pw_gid, server.group
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise ConfigError([f"{_key(config, 'server.group')}: expected a group of this "
                               f"machine (got {group!r}: no such group)"]) from None
    else:
        try:
            group = grp.getgrgid(gid).gr_name
        except KeyError:
            group = str(gid)
    return Account(server.user, pw.pw_uid, group, gid)


def drop(config: AppConfig, owned: Iterable[str | None] = ()) -> None:
    """Become ``server.user`` if started as root; the listeners must be bound.
    ``owned``: what root made before for the user to write (the metrics' directory)."""
    account = resolve(config)
    euid = os.geteuid()
    if account is None:
        if euid == 0:
            logs.event("running_as_root", level=logging.WARNING,
                       note="set server.user to run as an unprivileged user")
        return
    if (euid, os.getegid()) == (account.uid, account.gid):
        return  # started as that account (systemd's User= and Group=)
    if euid != 0:
        raise ConfigError([f"{_key(config, 'server.user')}: cannot become user "
                           f"{account.user!r}: started as uid {euid}, not as root "
                           f"nor as that user"])
    for path in filter(None, owned):
        os.chown(path, account.uid, account.gid)
    os.initgroups(account.user, account.gid)  # its supplementary groups (ssl-cert...)
    os.setgid(account.gid)
    os.setuid(account.uid)  # real, effective and saved: there is no way back
    logs.event("privileges_dropped", user=account.user, uid=account.uid,
               group=account.group, gid=account.gid)
