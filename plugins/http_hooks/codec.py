"""HTTP/JSON hooks in the shape of Stalwart's MTA Hooks, without I/O.

The request is ``{"context": …, "envelope": …, "message": …}``; the response is
``{"action": …, "response": …, "modifications": […]}``. This module builds the
request from the contexts and checks a response completely before anything of
it is applied: a response with one bad part is a broken filter, not half an
instruction.
"""

from __future__ import annotations

import json
import re
from typing import Any

from attrs import frozen

ACTIONS = ("accept", "reject", "discard", "quarantine")
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+\Z")
_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}\Z")

#: Modification type -> the fields it needs (Stalwart's names; ``addRcpt`` and
#: ``deleteRcpt`` are accepted as spellings of the recipient ones).
MODIFICATIONS: dict[str, tuple[str, ...]] = {
    "changeFrom": ("value",),
    "addRecipient": ("value",),
    "deleteRecipient": ("value",),
    "replaceContents": ("value",),
    "addHeader": ("name", "value"),
    "insertHeader": ("index", "name", "value"),
    "changeHeader": ("index", "name", "value"),
    "deleteHeader": ("index", "name"),
}
_ALIASES = {"addRcpt": "addRecipient", "deleteRcpt": "deleteRecipient"}


class BadResponse(Exception):
    """The filter's answer is not a hook response."""


@frozen
class Reply:
    """The ``response`` object: the SMTP reply the filter wants."""

    status: int | None = None
    enhanced: str | None = None
    message: str | None = None
    disconnect: bool = False


@frozen
class Modification:
    kind: str
    value: str = ""
    name: str = ""
    index: int = 0
    parameters: dict[str, Any] | None = None


@frozen
class HookResponse:
    action: str
    reply: Reply
    modifications: tuple[Modification, ...] = ()


def _tls(session: Any) -> dict[str, Any] | None:
    tls = session.tls
    if tls is None:
        return None
    return {"version": tls.protocol, "cipher": tls.cipher, "cipherBits": tls.bits,
            "certIssuer": "", "certSubject": tls.peer_subject}


def _text(value: str) -> str:
    """Header text as JSON can carry it: 8-bit bytes that are not UTF-8 (kept as
    surrogates by the header parser) become U+FFFD."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def build_request(stage: str, session: Any, transaction: Any = None, *, helo: str | None = None,
                  recipient: Any = None, message: Any = None) -> dict[str, Any]:
    """The request for ``stage`` (connect, ehlo, auth, mail, rcpt, data)."""
    context: dict[str, Any] = {
        "stage": stage,
        "client": {"ip": session.remote_ip, "port": session.remote_port,
                   "ptr": session.reverse_name or "",
                   "helo": session.helo_name if helo is None else helo},
        "sasl": ({"login": session.auth_user, "method": session.auth_mechanism}
                 if session.auth_user else None),
        "tls": _tls(session),
        "server": {"name": session.hostname, "port": session.local_port,
                   "ip": session.local_ip},
        "queue": {"id": transaction.queue_id} if transaction is not None else None,
        "protocol": {"version": 1},
    }
    request: dict[str, Any] = {"context": context}
    if transaction is not None:
        rcpts = list(transaction.recipients) + ([recipient] if recipient is not None else [])
        request["envelope"] = {
            "from": {"address": transaction.mail_from,
                     "parameters": _params(transaction.mail_params)},
            "to": [{"address": r.address, "parameters": _params(r.params)} for r in rcpts],
        }
    if message is not None:
        with message.open_body() as body:
            contents = body.read().decode("utf-8", "replace")
        request["message"] = {
            "headers": [[_text(name), _text(value[1:] if value.startswith(" ") else value)]
                        for name, value in message.headers],
            "contents": contents,
            "size": message.size,
        }
    return request


def encode_request(request: dict[str, Any]) -> bytes:
    return json.dumps(request, ensure_ascii=False).encode("utf-8", "replace")


def parse_response(data: bytes) -> HookResponse:
    """Check the whole response; raise :class:`BadResponse` naming what is wrong."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise BadResponse(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadResponse("not a JSON object")
    action = doc.get("action")
    if action not in ACTIONS:
        raise BadResponse(f"action must be one of {', '.join(ACTIONS)} (got {action!r})")
    mods = doc.get("modifications")
    mods = [] if mods is None else mods
    if not isinstance(mods, list):
        raise BadResponse("modifications must be a list")
    return HookResponse(action, _reply(doc.get("response")),
                        tuple(_modification(m, i) for i, m in enumerate(mods)))


def _reply(obj: Any) -> Reply:
    if obj is None:
        return Reply()
    if not isinstance(obj, dict):
        raise BadResponse("response must be an object")
    status, enhanced = obj.get("status"), obj.get("enhancedStatus")
    message, disconnect = obj.get("message"), obj.get("disconnect", False)
    if status is not None and (type(status) is not int or not 200 <= status <= 599):
        raise BadResponse(f"response.status must be an SMTP reply code (got {status!r})")
    if enhanced is not None and not (isinstance(enhanced, str) and _ENHANCED.match(enhanced)):
        raise BadResponse(f"response.enhancedStatus must be like 5.7.1 (got {enhanced!r})")
    if message is not None and (not isinstance(message, str) or "\r" in message
                                or "\n" in message):
        raise BadResponse("response.message must be one line of text")
    if not isinstance(disconnect, bool):
        raise BadResponse("response.disconnect must be true or false")
    return Reply(status, enhanced, message, disconnect)


def _modification(obj: Any, i: int) -> Modification:
    where = f"modifications[{i}]"
    if not isinstance(obj, dict):
        raise BadResponse(f"{where} must be an object")
    kind = _ALIASES.get(obj.get("type"), obj.get("type"))
    if kind not in MODIFICATIONS:
        raise BadResponse(f"{where}.type: unknown modification {obj.get('type')!r}")
    for key in MODIFICATIONS[kind]:
        if key not in obj:
            raise BadResponse(f"{where}: {kind} needs {key!r}")
    value, name, index = obj.get("value", ""), obj.get("name", ""), obj.get("index", 0)
    if not isinstance(value, str) or not isinstance(name, str):
        raise BadResponse(f"{where}: name and value must be strings")
    if name and not _HEADER_NAME.match(name):
        raise BadResponse(f"{where}.name: not a header field name: {name!r}")
    first = 1 if kind in ("changeHeader", "deleteHeader") else 0
    if type(index) is not int or index < first:
        raise BadResponse(f"{where}.index must be an integer of at least {first}")
    if kind in ("addHeader", "insertHeader", "changeHeader"):
        value = value.replace("\r\n", "\n").replace("\n", "\r\n")
        if re.search(r"\r(?!\n[ \t])", value):
            raise BadResponse(f"{where}.value: a line break that is not folding")
    params = obj.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise BadResponse(f"{where}.parameters must be an object")
    return Modification(kind, value, name, index, params)
