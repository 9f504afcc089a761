"""The built-in ``milter`` plugin: the milters of ``[[milter.milters]]`` (or of the
listener's own ``[[listeners.NAME.milter.milters]]``), asked at every SMTP event in
configured order (see docs/plugins.md, "Milters")."""

from __future__ import annotations

import tempfile
from typing import Annotated, Any, Literal

from attrs import field, frozen

from appliance import Check, Duration, PerListener, PluginConfig, hookimpl, per_listener
from appliance.clients import (
    DEFAULT_MACROS,
    STASH_KEY,
    MilterChain,
    MilterSpec,
    chain_of,
    is_socket,
)


def _is_stage_map(value: dict) -> bool:
    return set(value) <= set(DEFAULT_MACROS)


_POSITIVE = Check(lambda v: float(v) > 0, "a duration longer than 0s")
_NAME = Check(lambda v: bool(v) and v.replace("-", "").replace("_", "").replace(".", "")
              .isalnum(), "a name of letters, digits, '-', '_' or '.'")


@frozen(kw_only=True)
class MilterSettings:
    """One ``[[milter.milters]]`` (or ``[[listeners.NAME.milter.milters]]``) entry."""

    name: Annotated[str, _NAME]
    socket: Annotated[str, Check(is_socket, "inet:host:port, inet6:[addr]:port or "
                                             "unix:/path")]
    connect_timeout: Annotated[Duration, _POSITIVE] = Duration("5s")
    command_timeout: Annotated[Duration, _POSITIVE] = Duration("10s")
    end_of_message_timeout: Annotated[Duration, _POSITIVE] = Duration("20s")
    default_action: Literal["tempfail", "reject", "accept"] = "tempfail"
    macros: Annotated[dict[str, list[str]], Check(
        _is_stage_map, "a table with keys among connect, helo, mail, rcpt, data, eoh, eom"
    )] = field(factory=dict)
    macro_values: dict[str, str] = field(factory=dict)
    on_demand: bool = False


def _unique_names(milters: list[MilterSettings]) -> bool:
    names = [m.name for m in milters]
    return len(names) == len(set(names))


@frozen(kw_only=True)
class MilterArea:
    """``[milter]`` and ``[listeners.NAME.milter]``: a listener's own ``milters``
    list replaces the global one for that listener (arrays are not merged)."""

    milters: Annotated[list[MilterSettings], Check(
        _unique_names, "milters with different names")] = field(factory=list)


def _spec(m: MilterSettings) -> MilterSpec:
    return MilterSpec(
        name=m.name, socket=m.socket, connect_timeout=float(m.connect_timeout),
        command_timeout=float(m.command_timeout),
        eom_timeout=float(m.end_of_message_timeout), default_action=m.default_action,
        macros={k: list(v) for k, v in m.macros.items()},
        macro_values=dict(m.macro_values), on_demand=m.on_demand)


class MilterPlugin:
    """Sends each session's events to its listener's milters and applies what they
    decide and change. Priority 300: after the access, relay, policy and HTTP
    hook checks, as Postfix runs milters after its smtpd restrictions."""

    area = "milter"
    Area = MilterArea

    @frozen(kw_only=True)
    class Config(PluginConfig):
        priority: int = 300

    def __init__(self, config: Config) -> None:
        self.config = config
        self.specs: PerListener[list[MilterSpec]] = PerListener([])
        self.budget = 27.0
        self.spill_dir = tempfile.gettempdir()

    @hookimpl
    def on_configure(self, config: Any, spool: Any) -> None:
        # Each listener's list, compiled once per configuration: a session looks
        # its listener's up at connect.
        self.specs = per_listener(config, "milter", MilterArea,
                                  lambda area: [_spec(m) for m in area.milters])
        # Stay inside the plugin time budget: a milter that runs past it gets its
        # default action, not the generic 451 of a plugin that overran.
        self.budget = float(config.server.plugin_timeout) * 0.9
        self.spill_dir = str(spool.tmp)

    @hookimpl
    def on_connect(self, session):
        specs = self.specs.of(session)
        if not specs:
            return None
        chain = MilterChain(specs, self.budget, self.spill_dir)
        session.stash[STASH_KEY] = chain
        return chain.run("connect", session)

    @hookimpl
    def on_ehlo(self, session, hostname):
        chain = chain_of(session)
        return chain.run("helo", session, hostname=hostname) if chain else None

    @hookimpl
    def on_mail_from(self, session, transaction):
        chain = chain_of(session)
        return chain.run("mail", session, transaction) if chain else None

    @hookimpl
    def on_rcpt_to(self, session, transaction, recipient):
        chain = chain_of(session)
        return chain.run("rcpt", session, transaction, recipient) if chain else None

    @hookimpl
    def on_data_start(self, session, transaction):
        chain = chain_of(session)
        return chain.run("data", session, transaction) if chain else None

    @hookimpl
    def on_message(self, session, transaction, message):
        chain = chain_of(session)
        return chain.run("message", session, transaction, message=message) if chain else None

    @hookimpl
    def on_disconnect(self, session) -> None:
        chain = chain_of(session)
        if chain is not None:
            chain.close()
