"""Access lists: allow and deny clients by IP address at connect.

The plugin owns the ``[access]`` area; a listener may override any key in
``[listeners.NAME.access]`` (a list given there replaces the global one, a list
not given is inherited). The decision, once per connection:

1. the client matches ``allow``/``allow_file``: let it in, its result in
   ``session.checks["access"]`` marked ``allow_listed`` (flow control may exempt
   it). Allow wins over deny, so an admin can open exceptions inside a denied range;
2. it matches ``deny``/``deny_file``: refuse it;
3. otherwise ``default``.

The result (``allow``, ``deny`` or ``default-deny``; nothing when the default
lets the client in) carries the matching ``entry`` and its ``source``.

List files are checked while the configuration is validated (a bad line is a
config error naming the file and line: check-config reports it and a reload with
it is refused) and read when the configuration takes effect (``on_configure``, at
start and on every SIGHUP). A file that turns bad between the two makes the
listeners using it answer ``421 4.3.0`` until the next reload: a broken list never
lets everyone in, nor shuts everyone out for good.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from attrs import Attribute, define, field, frozen

from appliance import Check, FilePath, PluginConfig, SessionContext, Verdict, hookimpl
from appliance.netlist import (
    ENTRY_EXPECTED,
    Entry,
    ListFileError,
    NetList,
    is_entry,
    parse_texts,
    read_file,
)

log = logging.getLogger("smtp_appliance.access")

EntryText = Annotated[str, Check(is_entry, ENTRY_EXPECTED)]


def _check_list_file(instance: Any, attribute: Attribute, value: str) -> None:
    """Validator of ``allow_file``/``deny_file``: a bad file is a config error, so
    check-config reports it and a reload with it is refused."""
    if not value:
        return
    try:
        read_file(value)
    except ListFileError as exc:
        # attrs' convention (message, attribute): the loader names the key.
        raise ValueError(str(exc), attribute) from None


@frozen(kw_only=True)
class AccessArea:
    """``[access]`` and ``[listeners.NAME.access]``."""

    allow: list[EntryText] = field(factory=list)
    allow_file: FilePath = field(default=FilePath(""), validator=_check_list_file)
    deny: list[EntryText] = field(factory=list)
    deny_file: FilePath = field(default=FilePath(""), validator=_check_list_file)
    default: Literal["allow", "deny"] = "allow"
    deny_action: Literal["reject", "close"] = "reject"
    deny_text: str = "Access denied"
    mode: Literal["enforce", "monitor"] = "enforce"


@define
class Policy:
    """One compiled area: what a listener's clients are checked against."""

    allow: NetList
    deny: NetList
    area: AccessArea
    broken: str = ""  # why the lists could not be read (see the module docstring)

    @classmethod
    def compile(cls, area: AccessArea, where: dict[str, str]) -> Policy:
        """``where``: the config key path of each inline list, for log lines."""
        try:
            return cls(
                NetList([*parse_texts(area.allow, where["allow"]), *_file(area.allow_file)]),
                NetList([*parse_texts(area.deny, where["deny"]), *_file(area.deny_file)]),
                area,
            )
        except ValueError as exc:  # ListFileError: the file changed since validation
            log.error("access_lists_unavailable", extra={"fields": {"error": str(exc)}})
            return cls(NetList(), NetList(), area, broken=str(exc))

    def decide(self, address: str) -> tuple[str, Entry | None]:
        """("allow" | "deny" | "default-allow" | "default-deny", entry that matched)."""
        entry = self.allow.match(address)
        if entry is not None:
            return "allow", entry
        entry = self.deny.match(address)
        if entry is not None:
            return "deny", entry
        return f"default-{self.area.default}", None


def _file(path: str) -> list[Entry]:
    return read_file(path) if path else []


class AccessPlugin:
    """Built-in plugin ``access``: owns ``[access]``; decides at ``on_connect``."""

    area = "access"
    Area = AccessArea

    @frozen(kw_only=True)
    class Config(PluginConfig):
        # Early, so that an allow-listed client is known before flow control looks.
        priority: int = 10

    def __init__(self, config: PluginConfig) -> None:
        self.config = config
        self.policies: dict[str, Policy] = {}
        self.fallback: Policy | None = None

    @hookimpl
    def on_configure(self, config: Any) -> None:
        compiled: dict[int, Policy] = {}  # listeners without their own table share one

        def policy(area: AccessArea, listener: str = "") -> Policy:
            if id(area) not in compiled:
                where = {key: _key_path(config, listener, key) for key in ("allow", "deny")}
                compiled[id(area)] = Policy.compile(area, where)
            return compiled[id(area)]

        global_area = config.areas.get("access") or AccessArea()
        self.fallback = policy(global_area)
        self.policies = {
            name: policy(listener.areas.get("access") or global_area, name)
            for name, listener in config.listeners.items()
        }

    @hookimpl
    def on_connect(self, session: SessionContext) -> Verdict | None:
        policy = self.policies.get(session.listener, self.fallback)
        if policy is None:
            return None
        if policy.broken:
            return Verdict.tmpreject("Access lists unavailable, try again later", 421, "4.3.0")
        outcome, entry = policy.decide(session.remote_ip)
        if outcome != "default-allow":
            session.checks.record("access", outcome, allow_listed=outcome == "allow",
                                  entry=entry[3] if entry else "",
                                  source=entry[4] if entry else "")
        if outcome == "allow":
            if log.isEnabledFor(logging.DEBUG):
                log.debug("access_allowed", extra={"fields": {
                    "session": session.session_id, "client": session.remote_ip,
                    "entry": entry[3], "source": entry[4]}})
            return None
        if outcome == "default-allow":
            return None
        area = policy.area
        if area.deny_action == "close":
            verdict = Verdict.close(f"{area.deny_text} (closed without reply)")
        else:
            verdict = Verdict.reject(area.deny_text, 554, "5.7.1")
        monitor = area.mode == "monitor" or self.config.mode == "monitor"
        log.info(
            "access_would_refuse" if monitor else "access_refused",
            extra={"fields": {
                "session": session.session_id,
                "client": session.remote_ip,
                "listener": session.listener,
                "list": "deny" if entry else "default",
                "entry": entry[3] if entry else 'default = "deny"',
                "source": entry[4] if entry else "",
                "action": area.deny_action,
            }},
        )
        # [access] mode is per listener: the host traces what it would have done.
        return verdict.as_monitor() if monitor else verdict


def _key_path(config: Any, listener: str, key: str) -> str:
    """Where an inline list was set: the listener's own key, else the global one."""
    own = f"listeners.{listener}.access.{key}"
    return own if listener and own in getattr(config, "origins", {}) else f"access.{key}"
