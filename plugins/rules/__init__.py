"""Admin-written rules: Axigen's acceptance and policy language as TOML.

The plugin owns ``[[rules]]``, an array of tables (a listener adds its own in
``[[listeners.NAME.rules]]``, after the global ones). Each rule names an event,
a condition in a small language (:mod:`.language`, compiled once per
configuration) over the variables of :mod:`.variables`, and actions
(:mod:`.actions`: a reply, setting a variable, a method). At each event the
rules of the session's listener run in order (:mod:`.engine`).

It runs after the ``relay`` plugin (priority 175 > 150), so a rule's ``accept``
cannot open a relay and ``rcpt_is_local`` reads what ``relay`` found, and before
the policy servers, HTTP hooks and milters, so a rule can add an on-demand milter
before the milter plugin runs. docs/rules.md is the administrator's guide.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen

from appliance import PerListener, PluginConfig, Verdict, hookimpl, per_listener

from .engine import Compiled, Outcome, compile_rules, evaluate
from .schema import Rule
from .variables import Env, RuleState

STASH_KEY = "rules"
#: A session carrying a list under this key (``smtp-appliance rules explain``) gets
#: what each rule made of each event appended to it.
EXPLAIN_KEY = "rules.explain"


def state_of(session: Any) -> RuleState:
    state = session.stash.get(STASH_KEY)
    if state is None:
        state = session.stash[STASH_KEY] = RuleState()
    return state


class RulesPlugin:
    """The built-in ``rules`` plugin."""

    area = "rules"
    Area = list[Rule]

    @frozen(kw_only=True)
    class Config(PluginConfig):
        priority: int = 175

    def __init__(self, config: Config) -> None:
        self.rules: PerListener[dict[str, list[Compiled]]] = PerListener(compile_rules([]))
        self.dns: Any = None

    @hookimpl
    def on_configure(self, config: Any, dns: Any) -> None:
        self.dns = dns
        self.rules = per_listener(config, "rules", list[Rule], compile_rules)

    def _run(self, event: str, session: Any, **contexts: Any) -> Verdict | None:
        rules = self.rules.of(session)[event]
        if not rules:
            return None
        env = Env(event, session, state_of(session), dns=self.dns, **contexts)
        explained = session.stash.get(EXPLAIN_KEY)
        outcomes: list[Outcome] | None = [] if explained is not None else None
        verdict = evaluate(rules, env, outcomes)
        if explained is not None:
            explained.extend((event, _shown(o)) for o in outcomes or [])
        if event == "rcpt_to" and (verdict is None or not verdict.stops):
            return _delivery(env) or verdict
        return verdict

    @hookimpl
    def on_connect(self, session: Any) -> Verdict | None:
        return self._run("connect", session)

    @hookimpl
    def on_ehlo(self, session: Any, hostname: str, extended: bool) -> Verdict | None:
        return self._run("ehlo", session, hostname=hostname, extended=extended)

    @hookimpl
    def on_auth(self, session: Any, mechanism: str, username: str) -> Verdict | None:
        return self._run("auth", session, mechanism=mechanism, username=username)

    @hookimpl
    def on_mail_from(self, session: Any, transaction: Any) -> Verdict | None:
        return self._run("mail_from", session, transaction=transaction)

    @hookimpl
    def on_rcpt_to(self, session: Any, transaction: Any, recipient: Any) -> Verdict | None:
        return self._run("rcpt_to", session, transaction=transaction, recipient=recipient)

    @hookimpl
    def on_headers_received(self, session: Any, transaction: Any,
                            headers: Any) -> Verdict | None:
        return self._run("headers_received", session, transaction=transaction,
                         headers=headers)

    @hookimpl
    def on_message(self, session: Any, transaction: Any, message: Any) -> Verdict | None:
        return self._run("message", session, transaction=transaction, message=message,
                         headers=message.headers)

    @hookimpl
    def on_disconnect(self, session: Any) -> None:
        self._run("disconnect", session)


def _shown(o: Outcome) -> dict[str, Any]:
    return {"rule": o.rule, "matched": o.matched, "decided_by": o.decided_by,
            "actions": o.actions, "verdict": str(o.verdict) if o.verdict else "",
            "error": o.error}


def _delivery(env: Env) -> Verdict | None:
    """``remote_delivery`` / ``local_delivery`` as rules set them (Axigen's
    remoteDelivery, localDelivery): who may send to a remote or a local recipient.
    They only narrow what ``[relay]`` allows; unset, they change nothing."""
    state = env.state
    local = bool(env.transaction.checks.value("relay", "local_domain", False))
    who = state.local_delivery if local else state.remote_delivery
    if who == "all" or not who or (who == "auth" and env.session.auth_user):
        return None
    if local:
        return Verdict.reject("Delivery to local recipients refused by local policy",
                              550, "5.7.1")
    return Verdict.reject(f"<{env.recipient.address}>: Relay access denied", 554, "5.7.1")
