"""Flow control and error control: limits per client, user and sender domain.

Counted in the shared counters (``appliance.state.counters``) so that they hold for the
whole appliance, every worker and, with the Redis store, every instance. Connection
limits refuse at connect with 421 4.7.0 and close; message and recipient rates
answer 451 4.7.1 at MAIL and RCPT; the refused recipient that reaches
``[flow.bad_recipients]`` is followed by 421 4.7.0 and the close (the core does it,
from ``session.max_bad_recipients``; in monitor mode it is logged at the next
command). The server-wide and per-listener session caps are the core's:
``server.max_sessions``, ``listeners.NAME.max_sessions``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent
from attrs import define, field

from appliance import (
    PerListener,
    StoreUnavailable,
    Verdict,
    format_duration,
    hookimpl,
    per_listener,
)

from .clients import Network, client_group, in_networks, parse_networks
from .settings import FlowSettings, RateLimit

log = logging.getLogger("smtp_appliance.flow")

NAME = "flow"
STASH = "flow"
STORE_DOWN = Verdict.tmpreject("Flow control state unavailable, try again later", 451, "4.3.0")
MAX_LOGGED = 10000  # (limit, client) pairs remembered to log each once per interval
PREGREET = Verdict.reject("Protocol error: talking before the greeting", 554, "5.7.1")


@define
class FlowState:
    """What flow control remembers about one session (``session.stash["flow"]``)."""

    group: str
    exempt: bool = False
    gauges: list[str] = field(factory=list)  # concurrent gauges entered: left at the end
    # What auto-ban has already counted, so that each error is counted once.
    bad_recipients: int = 0
    auth_failures: int = 0
    trace_seen: int = 0


class FlowControl:
    """The ``flow`` plugin; its settings are the ``[flow]`` area."""

    area = "flow"
    Area = FlowSettings

    def __init__(self, config: Any) -> None:
        self.monitor_all = config.mode == "monitor"
        self.counters: Any = None
        self.settings: PerListener[FlowSettings] = PerListener(FlowSettings())
        self.exempt: PerListener[tuple[Network, ...]] = PerListener(())
        self._logged: dict[tuple[str, ...], float] = {}

    # --- configuration ------------------------------------------------------------------

    @hookimpl
    def on_configure(self, config: Any, counters: Any) -> None:
        self.counters = counters
        self.settings = per_listener(config, self.area, FlowSettings, lambda s: s)
        self.exempt = per_listener(config, self.area, FlowSettings,
                                   lambda s: parse_networks(s.exempt_networks))

    def _settings(self, session: Any) -> FlowSettings:
        return self.settings.of(session)

    # --- connection -----------------------------------------------------------------------

    def _new_state(self, session: Any, s: FlowSettings) -> FlowState:
        st = FlowState(client_group(session.remote_ip, s.ipv4_prefix, s.ipv6_prefix))
        st.exempt = in_networks(session.remote_ip, self.exempt.of(session)) or (
            s.exempt_allow_listed and session.checks.allow_listed)
        cfg = s.bad_recipients
        if cfg.limit and not st.exempt and cfg.mode != "monitor" and not self.monitor_all:
            session.max_bad_recipients = cfg.limit  # the core closes at the limit itself
        session.stash[STASH] = st
        return st

    def _state(self, session: Any) -> FlowState:
        st = session.stash.get(STASH)
        if st is None:  # not asked at connect: an earlier plugin accepted the connection
            st = self._new_state(session, self._settings(session))
        return st

    @hookimpl
    def on_connect(self, session: Any) -> Verdict | None:
        s = self._settings(session)
        st = self._new_state(session, s)
        if st.exempt:
            return None
        verdict = self._ban_check(session, s, st)
        if not _stops(verdict):
            verdict = _then(verdict, self._connection_limits(session, s, st))
        if not _stops(verdict) and s.pregreet.delay > 0:
            session.greeting_delay = float(s.pregreet.delay)
        return verdict

    def _ban_check(self, session: Any, s: FlowSettings, st: FlowState) -> Verdict | None:
        if not _autoban_on(s):
            return None  # no store round trip per connection when nobody is banned
        try:
            left = self.counters.banned(ban_key(st.group))
        except StoreUnavailable:
            return _store_down(s.autoban.on_store_failure, s.autoban.mode)
        if left <= 0:
            return None
        verdict = _ban_verdict(s, st.group)
        return self._over(session, "ban", s.autoban.mode, verdict, st.group,
                          detail={"seconds_left": round(left)})

    def _connection_limits(self, session: Any, s: FlowSettings, st: FlowState) -> Verdict | None:
        where, group = session.listener, st.group
        limits = []
        if s.new_connections.limit:
            limits.append(("new_connections", s.new_connections, f"flow:new:{where}", "all",
                           Verdict.abort, "Too many new connections to this service"))
        if s.connections_per_ip.limit:
            limits.append(("connections_per_ip", s.connections_per_ip,
                           f"flow:conn:{where}:{group}", group, Verdict.abort,
                           f"Too many connections from {group}"))
        verdict = self._rates(session, limits)
        return verdict if _stops(verdict) else _then(verdict, self._concurrent(session, s, st))

    def _concurrent(self, session: Any, s: FlowSettings, st: FlowState) -> Verdict | None:
        """Sessions open at once from this client, then from its network: each a
        gauge entered now and left at disconnect."""
        network = client_group(session.remote_ip, s.network_ipv4_prefix, s.network_ipv6_prefix)
        verdict = None
        for name, cfg, key, subject in (
            ("concurrent_connections_per_ip", s.concurrent_connections_per_ip,
             f"flow:concurrent:{session.listener}:{st.group}", st.group),
            ("concurrent_connections_per_network", s.concurrent_connections_per_network,
             f"flow:concurrent_net:{session.listener}:{network}", network),
        ):
            if not cfg.limit:
                continue
            try:
                count = self.counters.enter(key, fail=cfg.on_store_failure)
            except StoreUnavailable:
                down = _store_down(cfg.on_store_failure, cfg.mode)
                if down is not None:
                    return _then(verdict, down)
                continue
            st.gauges.append(key)
            if count <= cfg.limit:
                continue
            text = (f"Too many concurrent connections from {subject} (limit {cfg.limit}),"
                    " try again later")
            verdict = _then(verdict, self._over(session, name, cfg.mode, Verdict.abort(text),
                                                subject, detail={"count": count}))
            if _stops(verdict):
                return verdict
        return verdict

    @hookimpl
    def on_pregreet(self, session: Any) -> Verdict | None:
        st = session.stash.get(STASH)
        if st is None or st.exempt:
            return None
        s = self._settings(session)
        return self._over(session, "pregreet", s.pregreet.mode, PREGREET, st.group)

    @hookimpl
    def on_disconnect(self, session: Any) -> None:
        st = session.stash.get(STASH)
        if st is None:
            return
        for key in st.gauges:
            self.counters.leave(key)
        st.gauges.clear()
        if not st.exempt:
            self._autoban(session, None, "disconnect", self._settings(session), st)

    # --- commands -----------------------------------------------------------------------

    @hookimpl
    def on_ehlo(self, session: Any) -> Verdict | None:
        return self._session_checks(session, None, "ehlo")

    @hookimpl
    def on_auth(self, session: Any) -> Verdict | None:
        return self._session_checks(session, None, "auth")

    @hookimpl
    def on_data_start(self, session: Any, transaction: Any) -> Verdict | None:
        return self._session_checks(session, transaction, "data_start")

    @hookimpl
    def on_mail_from(self, session: Any, transaction: Any) -> Verdict | None:
        return self._sender_rates(session, transaction, "mail_from", "messages")

    @hookimpl
    def on_rcpt_to(self, session: Any, transaction: Any) -> Verdict | None:
        return self._sender_rates(session, transaction, "rcpt_to", "recipients")

    def _sender_rates(self, session: Any, tx: Any, event: str, what: str) -> Verdict | None:
        """The session checks, then ``what`` ("messages" or "recipients") per
        client, user and sender domain."""
        verdict = self._session_checks(session, tx, event)
        st = self._state(session)
        if _stops(verdict) or st.exempt:
            return verdict
        s = self._settings(session)
        return _then(verdict, self._per_sender(
            session, tx, st, what, getattr(s, f"{what}_per_ip"),
            getattr(s, f"{what}_per_user"), getattr(s, f"{what}_per_sender_domain")))

    def _per_sender(self, session: Any, tx: Any, st: FlowState, what: str,
                    per_ip: RateLimit, per_user: RateLimit, per_domain: RateLimit,
                    ) -> Verdict | None:
        """Messages (at MAIL) or recipients (at RCPT) per client, user, sender domain:
        counted in one round trip to the store (``hit_many``)."""
        where = session.listener
        limits = []
        if per_ip.limit:
            limits.append((f"{what}_per_ip", per_ip, f"flow:{what}:ip:{where}:{st.group}",
                           st.group, Verdict.tmpreject, f"Too many {what} from {st.group}"))
        user = session.auth_user
        if user and per_user.limit:
            limits.append((f"{what}_per_user", per_user,
                           f"flow:{what}:user:{where}:{user.lower()}", user,
                           Verdict.tmpreject, f"Too many {what} from user {user}"))
        domain = tx.mail_from_domain.lower() if per_domain.limit else ""
        if domain:
            limits.append((f"{what}_per_sender_domain", per_domain,
                           f"flow:{what}:domain:{where}:{domain}", domain, Verdict.tmpreject,
                           f"Too many {what} from sender domain {domain}"))
        return self._rates(session, limits)

    def _session_checks(self, session: Any, tx: Any, event: str) -> Verdict | None:
        """Before a command is answered: auto-ban, bad recipients, the tarpit. (Bad
        commands and auth failures per session are the core's:
        ``limits.max_bad_commands``, ``auth.max_failures``.)"""
        st = self._state(session)
        if st.exempt:
            return None
        s = self._settings(session)
        verdict = self._autoban(session, tx, event, s, st)
        if verdict is not None:
            return verdict
        cfg, count = s.bad_recipients, session.bad_recipients
        if cfg.limit and count >= cfg.limit:
            text = f"Too many bad recipients (limit {cfg.limit}), closing connection"
            verdict = self._over(session, "bad_recipients", cfg.mode, Verdict.abort(text),
                                 st.group, detail={"count": count})
            if _stops(verdict):
                return verdict
        errors = session.bad_commands + session.bad_recipients + session.auth_failures
        if s.tarpit.delay > 0 and errors >= s.tarpit.after_errors and not self.monitor_all:
            gevent.sleep(float(s.tarpit.delay))  # cooperative: delays this session only
        return verdict

    # --- auto-ban -----------------------------------------------------------------------

    def _autoban(self, session: Any, tx: Any, event: str, s: FlowSettings,
                 st: FlowState) -> Verdict | None:
        """Count this session's new errors per client; more than allowed in the window:
        ban the client (stored in the counters, listed by ``smtp-appliance bans list``)."""
        a = s.autoban
        if not _autoban_on(s):
            return None
        new = {
            "auth_failures": session.auth_failures - st.auth_failures,
            "bad_recipients": session.bad_recipients - st.bad_recipients,
            "relay_attempts": _relay_attempts(session.trace, st.trace_seen),
        }
        st.auth_failures, st.bad_recipients = session.auth_failures, session.bad_recipients
        st.trace_seen = len(session.trace)
        for name, amount in new.items():
            threshold = getattr(a, name)
            if not threshold or amount <= 0:
                continue
            try:
                count = self.counters.hit(f"flow:ban:{name}:{st.group}", float(a.window),
                                          amount=amount, fail=a.on_store_failure)
            except StoreUnavailable:
                return None if event == "disconnect" else _store_down("closed", a.mode)
            if count <= threshold:
                continue
            reason = f"{count} {name.replace('_', ' ')} in {format_duration(a.window)}"
            if a.mode == "monitor" or self.monitor_all:
                self._note(session, "autoban", st.group, float(a.window), "would_ban",
                           reason=reason)
                continue
            try:
                self.counters.ban(ban_key(st.group), float(a.ban_time), reason)
            except StoreUnavailable:
                return None if event == "disconnect" else _store_down("closed", a.mode)
            self._note(session, "autoban", st.group, 0, "banned", reason=reason,
                       seconds=round(float(a.ban_time)))
            if event == "disconnect":
                return None
            return _ban_verdict(s, st.group)
        return None

    # --- counting and refusing ------------------------------------------------------------

    def _rates(self, session: Any, limits: list[tuple]) -> Verdict | None:
        """One event more for each limit ``(name, cfg, key, subject, refuse, what)``,
        counted together in one store call (one per ``on_store_failure`` setting);
        the first limit over ``cfg.limit`` in ``cfg.interval`` refuses, after those in
        monitor mode that are over too. Every limit counts the event, also when an
        earlier one refuses it."""
        if not limits:
            return None
        counts: list[int | None] = [None] * len(limits)
        for fail in {cfg.on_store_failure for _n, cfg, *_ in limits}:
            picked = [i for i, limit in enumerate(limits) if limit[1].on_store_failure == fail]
            try:
                found = self.counters.hit_many(
                    [(limits[i][2], float(limits[i][1].interval), 1) for i in picked],
                    fail=fail)
            except StoreUnavailable:
                continue  # these stay None: answered below, in order
            for i, n in zip(picked, found, strict=True):
                counts[i] = n
        verdict: Verdict | None = None
        for (name, cfg, _key, subject, refuse, what), count in zip(limits, counts, strict=True):
            if count is None:
                verdict = _then(verdict, _store_down(cfg.on_store_failure, cfg.mode))
            elif count > cfg.limit:
                text = (f"{what} (limit {cfg.limit} per {format_duration(cfg.interval)}),"
                        " try again later")
                verdict = _then(verdict, self._over(
                    session, name, cfg.mode, refuse(text), subject,
                    interval=float(cfg.interval), detail={"count": count}))
            if _stops(verdict):
                return verdict
        return verdict

    def _over(self, session: Any, name: str, mode: str, verdict: Verdict, subject: str,
              interval: float = 60.0, detail: dict | None = None) -> Verdict:
        """A limit was exceeded: log it (once per interval per client and limit) and
        refuse, or, when the limit is in monitor mode, have the host trace "would
        have refused" (the plugin's own monitor mode is the host's too)."""
        monitor = mode == "monitor" or self.monitor_all
        self._note(session, name, subject, interval,
                   "would_refuse" if monitor else "refused", **(detail or {}))
        return verdict.as_monitor() if mode == "monitor" else verdict

    def _note(self, session: Any, name: str, subject: str, interval: float, outcome: str,
              **fields: Any) -> None:
        """One log line per limit and client per interval, not one per connection."""
        now = time.monotonic()
        key = (session.listener, name, subject, outcome)
        if interval and self._logged.get(key, 0.0) > now:
            return
        if len(self._logged) > MAX_LOGGED:  # a flood from many clients: bounded memory
            self._logged = {k: t for k, t in self._logged.items() if t > now}
            if len(self._logged) > MAX_LOGGED:
                self._logged.clear()
        self._logged[key] = now + interval
        log.warning("flow_%s", outcome, extra={"fields": {
            "session": session.session_id, "limit": name, "client": session.remote_ip,
            "counted_as": subject, "listener": session.listener, **fields}})


def _stops(verdict: Verdict | None) -> bool:
    return verdict is not None and verdict.stops


def _then(earlier: Verdict | None, later: Verdict | None) -> Verdict | None:
    """Two checks' answers in order (see ``Verdict.then``)."""
    return later if earlier is None else earlier.then(later)


def _autoban_on(s: FlowSettings) -> bool:
    a = s.autoban
    return bool(a.auth_failures or a.bad_recipients or a.relay_attempts)


def _store_down(fail: str, mode: str) -> Verdict | None:
    """The store is unreachable and the limit fails closed: 451 4.3.0; a limit in
    monitor mode never refuses, not even then."""
    return STORE_DOWN if fail == "closed" and mode != "monitor" else None


def ban_key(group: str) -> str:
    """The key a client's ban is stored under: ``smtp-appliance bans delete flow:IP``."""
    return f"{NAME}:{group}"


def _ban_verdict(s: FlowSettings, group: str) -> Verdict:
    if s.autoban.action == "reject":
        return Verdict.reject(f"Client {group} is banned for repeated errors", 554, "5.7.1")
    return Verdict.abort(f"Client {group} is temporarily banned for repeated errors,"
                         " try again later")


def _relay_attempts(trace: list, seen: int) -> int:
    """Recipients refused with 5.7.1 (relay denied) since ``seen`` in the trace."""
    return sum(1 for e in trace[seen:]
               if e.event == "rcpt_to" and e.action == "reject" and e.enhanced == "5.7.1"
               and e.mode == "enforce" and e.plugin != NAME)
