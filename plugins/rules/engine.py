"""Running the rules of one event: in order, each condition, then the actions of
those that match, until a reply decides or a rule says ``stop``.

A rule that fails while it runs (a check whose DNS fails, a method that raises)
answers ``451 4.3.0`` for the command, and the log line and the decision trace
name it; never a 250 by accident. A rule in ``monitor`` mode runs nothing: what
it would have done is traced as ``(monitor)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from attrs import define, evolve, field

from appliance import Action, Verdict

from .actions import compile_step
from .language import Node, compile_condition
from .schema import Rule, scope_of
from .variables import EVENTS, Env

log = logging.getLogger("smtp_appliance.rules")

#: What the client reads when a rule fails; the log and the trace name the rule.
RULE_FAILURE_TEXT = "Internal error in a policy rule, try again later"


@define
class Compiled:
    rule: Rule
    condition: Node
    steps: list[Any]
    test: Any = None  # the condition's function

    def __attrs_post_init__(self) -> None:
        self.test = self.condition.fn

    @property
    def name(self) -> str:
        return self.rule.name


@define
class Outcome:
    """What ``rules explain`` shows of one rule: matched or not, the part of the
    condition that decided, the actions run and the verdict."""

    rule: str
    matched: bool
    decided_by: str
    actions: list[str] = field(factory=list)
    verdict: Verdict | None = None
    error: str = ""


def compile_rules(rules: Iterable[Rule]) -> dict[str, list[Compiled]]:
    """Enabled rules by event, in order: priority (lower first), then as written."""
    by_event: dict[str, list[Compiled]] = {e: [] for e in EVENTS}
    ordered = sorted(enumerate(r for r in rules if r.enabled),
                     key=lambda item: (item[1].priority, item[0]))
    for _, rule in ordered:
        scope = scope_of(rule.event)
        by_event[rule.event].append(Compiled(
            rule, compile_condition(rule.condition, scope),
            [compile_step(step, rule.event) for step in rule.actions]))
    return by_event


def describe_step(step: Any) -> str:
    if step.action:
        reply = " ".join(str(p) for p in (step.code or "", step.enhanced_code) if p)
        return f"{step.action} {reply}".strip()
    if step.set:
        return f"set {step.set} = {step.value!r}"
    return step.method


def evaluate(rules: list[Compiled], env: Env,
             explain: list[Outcome] | None = None) -> Verdict | None:
    """Run ``rules`` (one event's) against ``env``; the verdict that decides, with
    what monitoring rules would have done traced before it, or None."""
    monitored: list[Verdict] = []
    for compiled in rules:
        try:
            matched = compiled.test(env)
        except Exception as exc:  # noqa: BLE001 - the rule's failure, reported as such
            return _failed(compiled, env, exc, explain)
        outcome = None
        if explain is not None:
            outcome = Outcome(compiled.name, bool(matched), compiled.condition.decided_by(env))
            explain.append(outcome)
        if not matched:
            continue
        rule = compiled.rule
        if rule.mode == "monitor":
            monitored.append(_would(compiled, env))
            if outcome is not None:
                outcome.actions = [f"(monitor) {describe_step(s)}" for s in rule.actions]
        else:
            try:
                verdict = _run(compiled, env, outcome)
            except Exception as exc:  # noqa: BLE001
                if explain is not None:
                    explain.pop()
                return _failed(compiled, env, exc, explain)
            if verdict is not None:
                verdict = evolve(verdict, rule=rule.name, monitored=tuple(monitored))
                if outcome is not None:
                    outcome.verdict = verdict
                return verdict
        if rule.stop:
            break
    if monitored:
        return Verdict(Action.CONTINUE, monitored=tuple(monitored))
    return None


def _run(compiled: Compiled, env: Env, outcome: Outcome | None) -> Verdict | None:
    """The actions of a matching rule, until a reply that decides."""
    for step, run in zip(compiled.rule.actions, compiled.steps, strict=True):
        if outcome is not None:
            outcome.actions.append(describe_step(step))
        found = run(env)
        if found is not None and found.stops:
            return found
    return None


def _would(compiled: Compiled, env: Env) -> Verdict:
    """What a monitoring rule would have answered (its reply, texts expanded), or a
    ``continue`` listing the actions it would have run."""
    for step, run in zip(compiled.rule.actions, compiled.steps, strict=True):
        if step.action:
            return evolve(run(env), rule=compiled.name)
    done = "; ".join(describe_step(s) for s in compiled.rule.actions) or "nothing"
    return Verdict(Action.CONTINUE, text=f"would run: {done}", rule=compiled.name)


def _failed(compiled: Compiled, env: Env, exc: Exception,
            explain: list[Outcome] | None) -> Verdict:
    log.error("rule_failed", extra={"fields": {
        "session": env.session.session_id, "rule": compiled.name, "event": env.event,
        "error": f"{type(exc).__name__}: {exc}"}})
    verdict = Verdict(Action.TMPREJECT, 451, "4.3.0", RULE_FAILURE_TEXT, rule=compiled.name)
    if explain is not None:
        explain.append(Outcome(compiled.name, False, "", verdict=verdict,
                               error=f"{type(exc).__name__}: {exc}"))
    return verdict
