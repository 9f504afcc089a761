"""GeoIP: the client's country from a MaxMind DB file, checked against allowed and
banned country lists at connect.

The plugin owns the ``[geoip]`` area; a listener may override any key in
``[listeners.NAME.geoip]`` (a submission listener usually bans nobody). It records
``session.checks["geoip"]`` for every later plugin: the lookup's result (found,
private, unknown, no-database), the ``country`` (GeoIPResult) and whether it is
``banned`` (IsGeoIPBanned; why in ``explanation``), then applies ``action`` to a
banned client.

The database is checked when the configuration is validated (check-config reports
a bad file, a reload with one is refused) and opened when the configuration takes
effect: at start and on every SIGHUP, so a new file is picked up by a reload.
Sessions in flight keep the file they started with.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any, Literal

from attrs import Attribute, define, field, frozen

from appliance import (
    Check,
    FilePath,
    PerListener,
    PluginConfig,
    SessionContext,
    Verdict,
    hookimpl,
    per_listener,
)

from .database import (
    FOUND,
    NO_DATABASE,
    PRIVATE,
    UNKNOWN,
    DatabaseError,
    check_database,
    client_address,
    country_of,
    is_private,
    open_database,
)

log = logging.getLogger("smtp_appliance.geoip")

COUNTRY_EXPECTED = 'a two-letter ISO 3166 country code such as "DE"'
Country = Annotated[str, Check(lambda v: re.fullmatch(r"[A-Za-z]{2}", v) is not None,
                               COUNTRY_EXPECTED)]


def _check_database(instance: Any, attribute: Attribute, value: str) -> None:
    if not value:
        return
    try:
        check_database(value)
    except DatabaseError as exc:
        raise ValueError(str(exc), attribute) from None  # attrs' convention: names the key


@frozen(kw_only=True)
class GeoIPArea:
    """``[geoip]`` and ``[listeners.NAME.geoip]``."""

    database: FilePath = field(default=FilePath(""), validator=_check_database)
    allowed_countries: list[Country] = field(factory=list)
    banned_countries: list[Country] = field(factory=list)
    private_addresses: Literal["allow", "lookup", "ban"] = "allow"
    unknown_country: Literal["allow", "ban"] = "allow"
    exempt_allow_listed: bool = True
    action: Literal["reject", "tmpreject", "abort", "continue"] = "reject"
    text: str = "Connections from your country (#Country#) are not accepted"
    mode: Literal["enforce", "monitor"] = "enforce"


@define
class Policy:
    """One listener's area, compiled: the lists as sets, the database opened."""

    area: GeoIPArea
    reader: Any  # None: no database configured, or it could not be opened
    allowed: frozenset[str]
    banned: frozenset[str]

    def lookup(self, remote_ip: str) -> tuple[str, str | None]:
        """(result, country): result is FOUND, PRIVATE, UNKNOWN or NO_DATABASE."""
        addr = client_address(remote_ip)
        if addr is None:
            return UNKNOWN, None
        if is_private(addr) and self.area.private_addresses != "lookup":
            return PRIVATE, None
        if self.reader is None:
            return NO_DATABASE, None
        country = country_of(self.reader, addr)
        return (FOUND, country) if country else (UNKNOWN, None)

    def banned_because(self, result: str, country: str | None) -> str:
        """Why the client is banned ("" if it is not)."""
        if result == PRIVATE:
            return "private" if self.area.private_addresses == "ban" else ""
        if result == NO_DATABASE:
            return ""  # the file broke after validation: logged, fail open
        if result != FOUND:
            return "unknown" if self.area.unknown_country == "ban" else ""
        if country in self.banned:
            return "banned"
        if self.allowed and country not in self.allowed:
            return "not-allowed"
        return ""


class GeoIPPlugin:
    """Built-in plugin ``geoip``: owns ``[geoip]``; decides at ``on_connect``."""

    area = "geoip"
    Area = GeoIPArea

    @frozen(kw_only=True)
    class Config(PluginConfig):
        # After access (10), so an allow-listed client is known; before flow (100),
        # so that a banned client does not count against flow limits.
        priority: int = 50

    def __init__(self, config: PluginConfig) -> None:
        self.config = config
        self.policies: PerListener[Policy | None] = PerListener(None)

    @hookimpl
    def on_configure(self, config: Any) -> None:
        readers: dict[str, Any] = {}

        def reader(path: str) -> Any:
            if path and path not in readers:
                try:
                    readers[path] = open_database(path)
                except DatabaseError as exc:  # changed since validation: fail open
                    log.error("geoip_database_unavailable",
                              extra={"fields": {"database": path, "error": str(exc)}})
                    readers[path] = None
            return readers.get(path)

        def policy(area: GeoIPArea) -> Policy:
            return Policy(area, reader(area.database),
                          frozenset(c.upper() for c in area.allowed_countries),
                          frozenset(c.upper() for c in area.banned_countries))

        self.policies = per_listener(config, self.area, GeoIPArea, policy)

    @hookimpl
    def on_connect(self, session: SessionContext) -> Verdict | None:
        policy = self.policies.of(session)
        if policy is None or not policy.area.database:
            return None  # GeoIP is off unless a database is set
        result, country = policy.lookup(session.remote_ip)
        reason = policy.banned_because(result, country)
        if reason and session.checks.allow_listed and policy.area.exempt_allow_listed:
            reason = ""
        session.checks.record("geoip", result, reason, country=country, banned=bool(reason))
        fields = {"session": session.session_id, "client": session.remote_ip,
                  "listener": session.listener, "result": result, "country": country or ""}
        if not reason:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("geoip_country", extra={"fields": fields})
            return None
        area = policy.area
        monitor = area.mode == "monitor" or self.config.mode == "monitor"
        fields.update(reason=reason, action=area.action)
        event = ("geoip_banned" if area.action == "continue" else
                 "geoip_would_refuse" if monitor else "geoip_refused")
        log.info(event, extra={"fields": fields})
        verdict = _verdict(area, country)
        if verdict is None:
            return None  # action "continue": only marked, for later rules
        # [geoip] mode is per listener: the host traces what it would have done.
        return verdict.as_monitor() if monitor else verdict


def _verdict(area: GeoIPArea, country: str | None) -> Verdict | None:
    """The reply for a banned client; at connect a reject is a 554 greeting, the
    others 421 and close."""
    text = area.text.replace("#Country#", country or "unknown")
    if area.action == "reject":
        return Verdict.reject(text, 554, "5.7.1")
    if area.action == "tmpreject":
        return Verdict.tmpreject(text, 421, "4.7.1")
    if area.action == "abort":
        return Verdict.abort(text)
    return None
