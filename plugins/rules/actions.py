"""What a rule does when its condition holds: its actions, compiled at load.

Each item of a rule's ``actions`` is one of: a reply (``action = "reject"``…, the
config's vocabulary), setting a variable (``set = "rcpt_folder"``), or a method
(``method = "add_header"``…, Axigen's methods under our names). Compiling checks
that the item has what it needs and that it can run at the rule's event; running
it returns the verdict a reply gives, or None.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import Any

from appliance import Action, Verdict
from appliance.clients import chain_of

from . import checks
from .language import expand, template_names
from .variables import DATA, ENVELOPE, RCPT, Env, getter, setter

#: Default replies, as plugins' verdicts have them (docs/plugins.md, "Verdicts").
_DEFAULT_CODES = {"reject": (550, "5.7.1"), "tmpreject": (451, "4.7.1"),
                  "abort": (421, "4.7.0")}
_CODE_CLASS = {"reject": "5", "tmpreject": "4", "abort": "4"}
_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
#: A rule's event -> the milter stage its executeFilters runs at.
MILTER_STAGES = {"connect": "connect", "ehlo": "helo", "mail_from": "mail",
                 "rcpt_to": "rcpt", "message": "message"}
CONNECTION = ("connect", "ehlo")

Run = Callable[[Env], Verdict | None]


def _text(step: Any, field: str, event: str) -> Callable[[Env], str]:
    """A text that may use ``#variable#``: its names are checked now."""
    text = getattr(step, field)
    if not isinstance(text, str):
        raise ValueError(f"{field}: expected a string (got {text!r})")
    getters = {}
    for name in template_names(text):
        try:
            getters[name] = getter(name, event)
        except ValueError as exc:
            raise ValueError(f"{field}: #{name}#: {exc}") from None
    if not getters:
        return lambda env: text
    return lambda env: " ".join(expand(text, env, getters.__getitem__).split())


def compile_reply(step: Any, event: str) -> Run:
    action = step.action
    if action in ("accept", "continue", "discard"):
        if step.code or step.enhanced_code:
            raise ValueError(f"action {action!r} has no reply code: remove code and "
                             f"enhanced_code")
        if action == "discard" and event not in ("rcpt_to", *DATA):
            raise ValueError("action 'discard' exists only at events rcpt_to, "
                             "headers_received, message")
        text = _text(step, "text", event)
        return lambda env: Verdict(Action(action), text=text(env) or None)
    code, enhanced = _DEFAULT_CODES[action]
    code, enhanced = step.code or code, step.enhanced_code or enhanced
    if not (100 <= code <= 599) or str(code)[0] != _CODE_CLASS[action]:
        raise ValueError(f"code: expected a {_CODE_CLASS[action]}xx reply code for action "
                         f"{action!r} (got {code})")
    if not _ENHANCED.fullmatch(enhanced) or enhanced[0] != str(code)[0]:
        raise ValueError(f"enhanced_code: expected an RFC 3463 code of the same class as "
                         f"{code}, such as \"{str(code)[0]}.7.1\" (got {enhanced!r})")
    text = _text(step, "text", event)
    return lambda env: Verdict(Action(action), code, enhanced, text(env) or None)


def compile_set(step: Any, event: str) -> Run:
    var = setter(step.set, event)
    value = step.value
    kinds = var.kind if isinstance(var.kind, tuple) else (var.kind,)
    if value is None or isinstance(value, bool) and bool not in kinds or not isinstance(
            value, kinds):
        what = {int: "an integer", str: "a string", bool: "true or false"}.get(kinds[0], "?")
        raise ValueError(f"value: variable {var.name!r} takes {what} (got {value!r})")
    if var.choices and value not in var.choices:
        raise ValueError(f"value: variable {var.name!r} takes one of "
                         f"{', '.join(var.choices)} (got {value!r})")
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        raise ValueError(f"value: variable {var.name!r} takes a number of at least 0")
    make = _text(step, "value", event) if isinstance(value, str) else lambda env: value
    assign = var.set

    def run(env: Env) -> None:
        assign(env, make(env))

    return run


# --- methods -------------------------------------------------------------------------------


def _headers(env: Env) -> Any:
    return env.headers if env.headers is not None else env.message.headers


def _need(step: Any, *fields: str) -> None:
    for f in fields:
        if not getattr(step, f):
            raise ValueError(f"method {step.method!r} needs {f}")


def _header_method(op: str) -> Callable[[Any, str], Run]:
    def make(step: Any, event: str) -> Run:
        _need(step, "name", *(("value",) if op in _WITH_VALUE else ()))
        name = step.name
        value = _text(step, "value", event) if op in _WITH_VALUE else None
        if op == "read":
            return lambda env: env.state.values.__setitem__(
                "header_value", "\r\n".join(_headers(env).get_all(name)))
        if op == "exists":
            return lambda env: env.state.values.__setitem__(
                "header_exists", _headers(env).exists(name))

        def run(env: Env) -> None:
            headers = _headers(env)
            if op in _WITH_VALUE:
                getattr(headers, op)(name, value(env))
            else:
                getattr(headers, op)(name)
            env.index = None  # header() and friends read the changed header

        return run

    return make


_WITH_VALUE = ("add", "add_if_absent", "remove_value", "modify", "modify_if_exists")


def _add_rcpt(step: Any, event: str) -> Run:
    _need(step, "address")
    address, folder = _text(step, "address", event), step.folder or "INBOX"

    def run(env: Env) -> None:
        env.transaction.add_recipient(address(env), folder)

    return run


def _quarantine(step: Any, event: str) -> Run:
    reason = _text(step, "reason", event)
    return lambda env: env.transaction.quarantine(reason(env) or "quarantined by a rule")


def _auth(enable: bool) -> Callable[[Any, str], Run]:
    def make(step: Any, event: str) -> Run:
        names = frozenset(m.upper() for m in step.mechanisms)
        if not enable and names:
            raise ValueError("method 'disable_auth' takes no mechanisms: it turns AUTH off")
        allowed = (names or None) if enable else frozenset()
        return lambda env: setattr(env.session, "auth_allowed", allowed)

    return make


def _starttls(enable: bool) -> Callable[[Any, str], Run]:
    return lambda step, event: lambda env: setattr(env.session, "starttls_allowed", enable)


def filter_sets(session: Any) -> list[Any]:
    """The session's filters a rule can add or run: the policy servers and HTTP
    hooks that offer themselves in ``session.stash["filters.NAME"]``, then the
    milters (docs/plugins.md, "Filters from rules"); each has ``names()``,
    ``add(name)`` and ``execute(pattern, stage, ...)``."""
    sets = [v for k, v in session.stash.items() if k.startswith("filters.")]
    chain = chain_of(session)
    return [*sets, chain] if chain is not None else sets


def _add_filter(step: Any, event: str) -> Run:
    _need(step, "name")

    def run(env: Env) -> None:
        ok = [f.add(step.name) for f in filter_sets(env.session)]
        env.state.values["add_filter_result"] = "ok" if any(ok) else "error"
        env.state.values["add_filter_explanation"] = "" if any(ok) else (
            f"no filter named {step.name!r} on listener {env.session.listener!r}")

    return run


def _execute_filters(step: Any, event: str) -> Run:
    _need(step, "pattern")
    stage = MILTER_STAGES[event]

    def run(env: Env) -> Verdict | None:
        for filters in filter_sets(env.session):
            found = filters.execute(step.pattern, stage, env.session, env.transaction,
                                    env.recipient, env.message,
                                    env.hostname or env.session.helo_name)
            env.index = None  # a filter may have changed the header
            for name in filters.names():
                if fnmatch.fnmatchcase(name, step.pattern):
                    env.state.filters[name] = _filter_result(found, name)
            verdict = found.verdict
            if verdict is not None and verdict.action is not Action.ACCEPT:
                return verdict  # a filter's accept ends that filter, not the command
        return None

    return run


def _filter_result(found: Any, name: str) -> dict[str, str]:
    """Axigen's 'filterName'.result, .action, .explanation of one filter."""
    if found.milter != name or found.verdict is None:
        return {"result": "pass", "action": "continue", "explanation": ""}
    refused = found.action in ("reject", "tmpreject", "abort")
    return {"result": "fail" if refused else "pass", "action": found.action,
            "explanation": found.explanation}


#: method -> (how to compile it, the events it exists at, Axigen's name)
METHODS: dict[str, tuple[Callable[[Any, str], Run], tuple[str, ...], str]] = {
    "check_spf": (checks.compile_spf, ENVELOPE[:2], "checkSPF"),
    "check_dnsbl": (checks.compile_dnsbl, ("connect", "ehlo", "auth", *ENVELOPE), "checkDNSBL"),
    "check_sender_mx": (checks.compile_sender_mx, ENVELOPE[:2], "checkSenderMX"),
    "check_geoip": (checks.compile_geoip, ("connect", "ehlo", "auth", *ENVELOPE), "checkGeoIp"),
    # the filters join a session at connect, after the rules: from ehlo on
    "add_filter": (_add_filter, ("ehlo", "mail_from", "rcpt_to", *DATA), "addFilter"),
    "execute_filters": (_execute_filters, tuple(MILTER_STAGES)[1:], "executeFilters"),
    "add_header": (_header_method("add"), DATA, "addHeader"),
    "add_header_if_absent": (_header_method("add_if_absent"), DATA, "addIfNotExistsHeader"),
    "remove_first_header": (_header_method("remove_first"), DATA, "removeFirstHeader"),
    "remove_header": (_header_method("remove"), DATA, "removeHeader"),
    "remove_header_value": (_header_method("remove_value"), DATA, "removeHeaderValue"),
    "modify_header": (_header_method("modify"), DATA, "modifyHeader"),
    "modify_header_if_exists": (_header_method("modify_if_exists"), DATA,
                                "modifyIfExistsHeader"),
    "read_header": (_header_method("read"), DATA, "readHeader"),
    "check_header_exists": (_header_method("exists"), DATA, "checkExistsHeader"),
    "add_rcpt": (_add_rcpt, RCPT, "addRcpt"),
    "discard_rcpt": (lambda step, event: lambda env: env.transaction.discard_recipient(),
                     RCPT, "discardRcpt"),
    "quarantine": (_quarantine, ("rcpt_to", *DATA), ""),
    "enable_auth": (_auth(True), CONNECTION, "authentication rules"),
    "disable_auth": (_auth(False), CONNECTION, "authentication rules"),
    "enable_starttls": (_starttls(True), CONNECTION, "Allow StartTLS"),
    "disable_starttls": (_starttls(False), CONNECTION, "Allow StartTLS"),
}


def compile_method(step: Any, event: str) -> Run:
    entry = METHODS.get(step.method)
    if entry is None:
        raise ValueError(f"method: unknown method {step.method!r} "
                         f"(known: {', '.join(sorted(METHODS))})")
    make, events, _ = entry
    if event not in events:
        raise ValueError(f"method {step.method!r} exists only at events {', '.join(events)} "
                         f"(the rule's event is {event!r})")
    return make(step, event)


def compile_step(step: Any, event: str) -> Run:
    given = [k for k in ("action", "set", "method") if getattr(step, k)]
    if len(given) != 1:
        raise ValueError("each action has exactly one of action (a reply), set (a "
                         f"variable) or method (got {', '.join(given) or 'none'})")
    return {"action": compile_reply, "set": compile_set,
            "method": compile_method}[given[0]](step, event)
