"""``[[rules]]`` and ``[[listeners.NAME.rules]]``: what an administrator writes.

The classes validate as they are built: the condition and the actions are compiled
for the rule's event by their validators, so ``check-config`` and a reload refuse a
rule with an unknown or misplaced variable, a read-only assignment, a bad regular
expression or a missing list file, naming the file, the rule and the variable
(the loader adds the file and the key path to the message).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from attrs import Attribute, field, frozen

from appliance import Check

from .actions import compile_step
from .language import RuleError, Scope, compile_condition
from .variables import getter

Event = Literal["connect", "ehlo", "auth", "mail_from", "rcpt_to", "headers_received",
                "message", "disconnect"]
ReplyAction = Literal["", "accept", "continue", "reject", "tmpreject", "discard", "abort"]
_NAME = Check(lambda v: bool(v.strip()), "a rule name (not empty)")
_CODE = Check(lambda v: v == 0 or 200 <= v <= 599,
              "an SMTP reply code from 200 to 599 (0 = the action's default)")


@frozen(kw_only=True)
class Step:
    """One item of a rule's ``actions``: a reply, ``set``, or a ``method`` and its
    parameters (which keys a method takes: docs/rules.md)."""

    action: ReplyAction = ""
    code: Annotated[int, _CODE] = 0
    enhanced_code: str = ""
    text: str = ""
    set: str = ""
    value: Any = None
    method: str = ""
    name: str = ""
    address: str = ""
    folder: str = ""
    reason: str = ""
    pattern: str = ""
    zones: list[str] = field(factory=list)
    allowed: list[str] = field(factory=list)
    banned: list[str] = field(factory=list)
    ban_action: str = ""
    mechanisms: list[str] = field(factory=list)


def scope_of(event: str) -> Scope:
    return Scope(event, lambda name: getter(name, event))


def _compiles_condition(rule: Rule, attribute: Attribute, value: str) -> None:
    try:
        compile_condition(value, scope_of(rule.event))
    except (RuleError, ValueError) as exc:
        raise ValueError(f"rule {rule.name!r}: {exc}", attribute) from None


def _compiles_actions(rule: Rule, attribute: Attribute, value: list[Step]) -> None:
    problems = []
    for index, step in enumerate(value):
        try:
            compile_step(step, rule.event)
        except (RuleError, ValueError) as exc:
            problems.append(f"[{index}]: {exc}")
    if problems:
        raise ValueError(f"rule {rule.name!r}: " + "; ".join(problems), attribute)


@frozen(kw_only=True)
class Rule:
    """One rule: at ``event``, if ``condition`` holds, run ``actions`` in order."""

    name: Annotated[str, _NAME]
    event: Event
    priority: int = 100
    enabled: bool = True
    mode: Literal["enforce", "monitor"] = "enforce"
    #: The condition (docs/rules.md); empty: always.
    condition: str = field(default="", validator=_compiles_condition)
    actions: list[Step] = field(factory=list, validator=_compiles_actions)
    #: Stop evaluating the later rules of this event once this one matched.
    stop: bool = False
    description: str = ""
