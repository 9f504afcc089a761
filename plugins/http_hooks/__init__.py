"""HTTP/JSON hooks (Stalwart's MTA Hooks): the built-in ``http-hooks`` plugin.

Owns ``[http_hooks]``: a list of web services, each POSTed a JSON request
(context, envelope, and at the data stage the message) at the stages it lists,
and answering an action, an optional SMTP reply and modifications. So an admin
can write a filter as a small web service. A hook that is down, slow or answers
something that is not a hook response gets its ``default_action`` within its
``timeout``, with a log line; the session goes on.
"""

from __future__ import annotations

import fnmatch
import logging
from typing import Annotated, Any, Literal

from attrs import define, field, frozen

from appliance import (
    Action,
    Check,
    Duration,
    PerListener,
    PluginConfig,
    Size,
    Verdict,
    hookimpl,
    per_listener,
)
from appliance.clients import FilterResult, HttpClient, HttpFailed

from .codec import (
    BadResponse,
    HookResponse,
    Modification,
    build_request,
    encode_request,
    parse_response,
)

log = logging.getLogger("smtp_appliance.http_hooks")

Stage = Literal["connect", "ehlo", "auth", "mail", "rcpt", "data"]
DefaultAction = Literal["tmpreject", "continue", "reject"]

_URL = Check(lambda v: v.startswith(("http://", "https://")) and len(v) > 8,
             'an http:// or https:// URL')
_POSITIVE = Check(lambda value: value > 0, "a duration longer than 0s")
_NAME = Check(lambda value: bool(value.strip()), "a name that is not empty")
_ONE_LINE = Check(lambda v: "\r" not in v and "\n" not in v, "one line of text")

#: Modifications of the message itself, which exist only from the data stage on.
CONTENT = ("replaceContents", "addHeader", "insertHeader", "changeHeader", "deleteHeader")


@frozen(kw_only=True)
class HttpHook:
    """One ``[[http_hooks.hooks]]`` entry."""

    name: Annotated[str, _NAME]
    url: Annotated[str, _URL]
    stages: list[Stage] = field(factory=lambda: ["data"])
    timeout: Annotated[Duration, _POSITIVE] = Duration("10s")
    auth_header: Annotated[str, _ONE_LINE] = ""
    default_action: DefaultAction = "tmpreject"
    max_response_size: Size = Size("1 MiB")
    verify_tls: bool = True
    #: Asked only in sessions where a rule added it (add_filter, execute_filters).
    on_demand: bool = False


@frozen(kw_only=True)
class HttpHooksArea:
    """``[http_hooks]`` and ``[listeners.NAME.http_hooks]``."""

    hooks: list[HttpHook] = field(factory=list)


UNAVAILABLE = {
    "tmpreject": Verdict.tmpreject("Content filter unavailable, try again later", 451, "4.3.0"),
    "reject": Verdict.reject("Content filter unavailable", 550, "5.3.0"),
    "continue": None,
}


@define
class Held:
    """Actions answered before the message exists, applied at the data stage."""

    discard: str | None = None
    quarantine: str | None = None
    content: list[Modification] = field(factory=list)


class HttpHooksPlugin:
    """Built-in plugin ``http-hooks``: asks web services at each SMTP stage."""

    area = "http_hooks"
    Area = HttpHooksArea

    @frozen(kw_only=True)
    class Config(PluginConfig):
        # After relay (150) and the policy servers (200).
        priority: int = 250

    def __init__(self, config: PluginConfig) -> None:
        self.config = config
        self.monitor = config.mode == "monitor"
        self.hooks: PerListener[list[HttpHook]] = PerListener([])
        self.http = HttpClient()

    @hookimpl
    def on_configure(self, config: Any) -> None:
        self.hooks = per_listener(config, "http_hooks", HttpHooksArea,
                                  lambda area: list(area.hooks))

    # --- stages --------------------------------------------------------------------

    @hookimpl
    def on_connect(self, session: Any) -> Verdict | None:
        if self.hooks.of(session):
            session.stash[RULES_KEY] = RuleFilters(self, session)
        return self._run("connect", session)

    @hookimpl
    def on_ehlo(self, session: Any, hostname: str) -> Verdict | None:
        return self._run("ehlo", session, helo=hostname)

    @hookimpl
    def on_auth(self, session: Any) -> Verdict | None:
        return self._run("auth", session)

    @hookimpl
    def on_mail_from(self, session: Any, transaction: Any) -> Verdict | None:
        return self._run("mail", session, transaction)

    @hookimpl
    def on_rcpt_to(self, session: Any, transaction: Any, recipient: Any) -> Verdict | None:
        return self._run("rcpt", session, transaction, recipient=recipient)

    @hookimpl
    def on_message(self, session: Any, transaction: Any, message: Any) -> Verdict | None:
        verdict = self._run("data", session, transaction, message=message)
        if verdict is not None and verdict.action is not Action.ACCEPT:
            return verdict
        if "http-hooks" not in session.stash:
            return verdict  # nothing was held back for the message
        for held in (self._held(session, None), self._held(session, transaction)):
            for mod in held.content:
                _apply_content(mod, message)
            if held.quarantine is not None:
                transaction.quarantine(held.quarantine)
            if held.discard is not None:
                return Verdict.discard(held.discard)
        return verdict

    # --- asking ----------------------------------------------------------------------

    def _held(self, session: Any, transaction: Any) -> Held:
        """Where answers about this message (or, before MAIL, the session) are kept."""
        stash = session.stash.setdefault("http-hooks", {"queue_id": "", "session": Held(),
                                                        "message": Held()})
        if transaction is None:
            return stash["session"]
        if stash["queue_id"] != transaction.queue_id:
            stash["queue_id"], stash["message"] = transaction.queue_id, Held()
        return stash["message"]

    def _run(self, stage: str, session: Any, transaction: Any = None, **kw: Any
             ) -> Verdict | None:
        rules = session.stash.get(RULES_KEY)
        hooks = [h for h in self.hooks.of(session) if stage in h.stages
                 and (not h.on_demand or rules is not None and h.name in rules.added)]
        recipient = kw.get("recipient")
        for hook in hooks:
            if rules is not None and rules.asked_key(hook, stage, transaction,
                                                     recipient) in rules.asked:
                continue  # a rule asked it at this very command
            verdict = self._ask(hook, stage, session, transaction, **kw)
            if verdict is not None:
                return verdict
        return None

    def _ask(self, hook: HttpHook, stage: str, session: Any, transaction: Any,
             recipient: Any = None, message: Any = None, helo: str | None = None
             ) -> Verdict | None:
        fields = {"session": session.session_id, "hook": hook.name, "stage": stage}
        try:
            body = encode_request(build_request(stage, session, transaction, helo=helo,
                                                recipient=recipient, message=message))
            response = parse_response(self._post(hook, body))
        except (HttpFailed, BadResponse) as exc:
            log.warning("http_hook_failed", extra={"fields": {
                **fields, "error": str(exc), "default_action": hook.default_action}})
            return UNAVAILABLE[hook.default_action]
        if response.action != "accept" or response.modifications:
            log.info("http_hook_answer", extra={"fields": {
                **fields, "action": response.action, "modifications":
                ",".join(m.kind for m in response.modifications) or "none",
                **({"mode": "monitor"} if self.monitor else {})}})
        return self._follow(hook, response, stage, session, transaction, recipient, message)

    def _post(self, hook: HttpHook, body: bytes) -> bytes:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if hook.auth_header:
            headers["Authorization"] = hook.auth_header
        return self.http.post(hook.url, body, timeout=float(hook.timeout),
                              max_response=int(hook.max_response_size), headers=headers,
                              verify_tls=hook.verify_tls)

    def _follow(self, hook: HttpHook, response: HookResponse, stage: str, session: Any,
                transaction: Any, recipient: Any, message: Any) -> Verdict | None:
        """The response as a verdict; its modifications applied (monitor: logged only)."""
        action, reply = response.action, response.reply
        if action == "reject":
            return _refusal(reply)
        if self.monitor:
            return Verdict.discard() if action == "discard" else None
        text = reply.message or f"{action} by content filter {hook.name}"
        held_now = stage in ("connect", "ehlo", "auth", "mail") or (
            stage == "rcpt" and action == "quarantine")
        if held_now and action in ("discard", "quarantine"):
            setattr(self._held(session, transaction), action, text)
        for mod in response.modifications:
            if mod.kind in CONTENT:
                if message is not None:
                    _apply_content(mod, message)
                else:
                    self._held(session, transaction).content.append(mod)
            elif transaction is not None:
                _apply_envelope(mod, transaction, recipient)
        if action == "quarantine" and stage == "data":
            transaction.quarantine(text)
        if action == "discard" and stage in ("rcpt", "data"):
            return Verdict.discard(text)
        return None


RULES_KEY = "filters.http-hooks"
#: A rule's stage (as milters name them) -> the hook's stage.
_RULE_STAGES = {"connect": "connect", "helo": "ehlo", "mail": "mail", "rcpt": "rcpt",
                "message": "data"}


class RuleFilters:
    """The session's HTTP hooks for rules (Axigen's addFilter and executeFilters),
    in ``session.stash["filters.http-hooks"]`` (docs/plugins.md, "Filters from
    rules"): ``names()``, ``add(name)``, ``execute(pattern, stage, ...)``."""

    def __init__(self, plugin: HttpHooksPlugin, session: Any) -> None:
        self.plugin, self.session = plugin, session
        self.added: set[str] = set()
        self.asked: set[tuple[str, str, str, str]] = set()

    @staticmethod
    def asked_key(hook: HttpHook, stage: str, transaction: Any,
                  recipient: Any) -> tuple[str, str, str, str]:
        return (hook.name, stage, transaction.queue_id if transaction is not None else "",
                recipient.address if recipient is not None else "")

    def names(self) -> list[str]:
        return [h.name for h in self.plugin.hooks.of(self.session)]

    def add(self, name: str) -> bool:
        if name not in self.names():
            return False
        self.added.add(name)
        return True

    def execute(self, pattern: str, stage: str, session: Any, transaction: Any = None,
                recipient: Any = None, message: Any = None, hostname: str = ""
                ) -> FilterResult:
        """Ask now, at ``stage`` (connect, helo, mail, rcpt, message), the hooks whose
        name matches the shell pattern; they stay added for the session, and the
        plugin does not ask them again at this command."""
        hook_stage = _RULE_STAGES[stage]
        for hook in self.plugin.hooks.of(session):
            if not fnmatch.fnmatchcase(hook.name, pattern):
                continue
            self.added.add(hook.name)
            self.asked.add(self.asked_key(hook, hook_stage, transaction, recipient))
            verdict = self.plugin._ask(hook, hook_stage, session, transaction,
                                       recipient=recipient, message=message,
                                       helo=hostname or None)
            if verdict is not None:
                return FilterResult(verdict, hook.name)
        return FilterResult(None)


def _refusal(reply: Any) -> Verdict:
    status = reply.status if reply.status and reply.status >= 400 else 550
    klass = str(status)[0]
    enhanced = reply.enhanced if reply.enhanced and reply.enhanced[0] == klass else \
        f"{klass}.7.1"
    text = reply.message or "Rejected by content filter"
    if reply.disconnect or status in (421, 521):
        return Verdict(Action.ABORT, status, enhanced, text)
    if status < 500:
        return Verdict.tmpreject(text, status, enhanced)
    return Verdict.reject(text, status, enhanced)


def _apply_envelope(mod: Modification, transaction: Any, recipient: Any) -> None:
    if mod.kind == "changeFrom":
        transaction.change_sender(mod.value, mod.parameters)
    elif mod.kind == "addRecipient":
        transaction.add_recipient(mod.value, params=mod.parameters)
    elif mod.kind == "deleteRecipient":
        if recipient is not None and recipient.address.lower() == mod.value.lower():
            transaction.discard_recipient()
        else:
            transaction.remove_recipient(mod.value)


def _apply_content(mod: Modification, message: Any) -> None:
    headers = message.headers
    if mod.kind == "replaceContents":
        body = mod.value.replace("\r\n", "\n").replace("\n", "\r\n")
        message.replace_body(body.encode("utf-8"))
    elif mod.kind == "addHeader":
        headers.add(mod.name, mod.value)
    elif mod.kind == "insertHeader":
        headers.insert(mod.index, mod.name, mod.value)
    elif mod.kind == "changeHeader":
        headers.modify_nth(mod.name, mod.index, mod.value)
    elif mod.kind == "deleteHeader":
        headers.remove_nth(mod.name, mod.index)
