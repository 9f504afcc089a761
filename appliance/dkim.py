"""DKIM verification of one message (RFC 6376) with dkimpy, the key lookups done
by the appliance's resolver (``appliance.dns``) through dkimpy's ``dnsfunc``.

Results use RFC 8601's words: pass, fail (the signature or the body hash does not
verify), permerror (no key, a bad key, a broken signature field), temperror (the
key could not be looked up), none (no signature). Pure apart from DNS: no gevent.

A public module because two checks need the results: the ``dkim`` plugin, which
reports them, and ``dmarc``, which verifies by itself when ``dkim`` is off. Both
call :func:`verify_message`, so a message is verified once, with the ``[dkim]``
settings, whoever asks first; the result is ``transaction.checks["dkim"]``.
"""

from __future__ import annotations

import io
import logging
from typing import Annotated, Any

import dkim
from attrs import frozen

from appliance.config import Check, Duration, Size
from appliance.dns import DnsTempError
from appliance.mail.authresults import AuthResult
from appliance.mail.checkresults import CheckResult

log = logging.getLogger("smtp_appliance.dkim")

#: The name of the results in ``transaction.checks``.
NAME = "dkim"

#: dkimpy logs every key problem at error level; we report them in results instead.
_quiet = logging.getLogger("smtp_appliance.dkim.dkimpy")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


@frozen
class Signature:
    """The outcome for one DKIM-Signature field."""

    result: str          # pass, fail, permerror, temperror, none
    domain: str = ""     # d=
    selector: str = ""   # s=
    identity: str = ""   # i=
    b: str = ""          # the start of b=, to tell signatures apart (RFC 6008)
    reason: str = ""

    def auth_result(self) -> AuthResult:
        props = {}
        if self.domain:
            props["header.d"] = self.domain
        if self.identity:
            props["header.i"] = self.identity
        if self.selector:
            props["header.s"] = self.selector
        if self.b:
            props["header.b"] = self.b
        return AuthResult("dkim", self.result, props, reason=self.reason)


def verify(data: bytes, lookup: Any, max_signatures: int = 5,
           min_key_bits: int = 1024) -> list[Signature]:
    """Verify the first ``max_signatures`` DKIM-Signature fields of ``data`` (the
    whole message, CRLF line ends). ``lookup`` is an ``appliance.dns.Lookup``."""
    try:
        d = dkim.DKIM(data, logger=_quiet, minkey=min_key_bits)
    except dkim.DKIMException as exc:
        return [Signature("permerror", reason=f"message not parsable: {exc}")]
    count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
    if count == 0:
        return [Signature("none")]
    return [_verify_one(d, i, lookup) for i in range(min(count, max_signatures))]


def _verify_one(d: dkim.DKIM, idx: int, lookup: Any) -> Signature:
    keys = _KeyLookup(lookup)
    d.signature_fields = {}
    try:
        ok = d.verify(idx=idx, dnsfunc=keys)
        result, reason = ("pass", "") if ok else (
            ("permerror", keys.problem) if keys.problem else ("fail", "signature did not verify"))
    except DnsTempError as exc:
        result, reason = "temperror", f"key lookup failed: {exc}"
    except dkim.ValidationError as exc:
        text = _text(exc)
        result = "fail" if text.startswith(("body hash mismatch", "signature expired")) \
            else "permerror"
        reason = text.split(" (got ", 1)[0]
    except dkim.DKIMException as exc:
        result, reason = "permerror", _text(exc)
    fields = d.signature_fields or {}
    return Signature(result, _field(fields, b"d").lower(), _field(fields, b"s"),
                     _field(fields, b"i"), _field(fields, b"b")[:12], reason)


class _KeyLookup:
    """dkimpy's ``dnsfunc``: the key record of ``selector._domainkey.domain.`` as
    bytes, b"" if there is none. Remembers why a key was unusable, since dkimpy
    only answers False then."""

    def __init__(self, lookup: Any) -> None:
        self.lookup = lookup
        self.problem = ""

    def __call__(self, name: bytes, timeout: float = 5) -> bytes:
        qname = name.decode("ascii", "replace").rstrip(".")
        records = self.lookup.txt(qname)  # raises DnsTempError: temperror
        keys = [r for r in records if "p=" in r] or records
        if not keys:
            self.problem = f"no key for signature at {qname}"
            return b""
        record = keys[0].encode("utf-8", "replace")
        try:
            dkim.evaluate_pk(name, record)
        except (dkim.DKIMException, ValueError) as exc:  # binascii.Error: bad base64
            self.problem = f"unusable key at {qname}: {_text(exc)}"
        return record


def _field(fields: dict, key: bytes) -> str:
    value = fields.get(key, b"")
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return "".join(text.split())


def _text(exc: Exception) -> str:
    return str(exc.args[0] if exc.args else exc).strip()[:200]


@frozen(kw_only=True)
class DkimArea:
    """``[dkim]`` and ``[listeners.NAME.dkim]``: owned by the ``dkim`` plugin, read by
    ``dmarc`` too (docs/configuration.md)."""

    timeout: Duration = Duration("5s")
    max_signatures: Annotated[int, Check(lambda v: 1 <= v <= 50, "an integer from 1 to 50")] = 5
    min_key_bits: Annotated[int, Check(lambda v: 512 <= v <= 16384,
                                       "an integer from 512 to 16384")] = 1024
    max_message_size: Size = Size("10 MiB")


def verify_message(session: Any, transaction: Any, message: Any, area: DkimArea,
                   dns: Any) -> CheckResult:
    """The DKIM result of this message, verified on the first call and recorded in
    ``transaction.checks`` and, one per signature, for Authentication-Results.

    Its ``result`` is ``pass`` when a signature passed, else the first signature's
    (``none``: no signature); ``signatures`` lists each one's ``result``,
    ``domain`` (d=), ``selector`` (s=), ``identity`` (i=) and ``reason``."""
    found = transaction.checks.get(NAME)
    if found is not None:
        return found
    if message.size > area.max_message_size:
        signed = any(n.lower() == "dkim-signature" for n, _ in message.headers)
        sigs = [Signature("policy", reason="message too large to verify")] if signed else [
            Signature("none")]
    elif dns is None:
        sigs = [Signature("temperror", reason="no resolver")]
    else:
        data = io.BytesIO()  # dkimpy verifies bytes in memory: bounded by max_message_size
        message.write_to(data)
        sigs = verify(data.getvalue(), dns.budget(float(area.timeout)),
                      area.max_signatures, area.min_key_bits)
    transaction.auth_results.extend(s.auth_result() for s in sigs)
    if log.isEnabledFor(logging.DEBUG):
        for s in sigs:
            log.debug("dkim_result", extra={"fields": {
                "session": session.session_id, "queue_id": transaction.queue_id,
                "result": s.result, "domain": s.domain, "selector": s.selector,
                "reason": s.reason}})
    first = next((s for s in sigs if s.result == "pass"), sigs[0])
    return transaction.checks.record(NAME, first.result, first.reason, signatures=[
        {"result": s.result, "domain": s.domain, "selector": s.selector,
         "identity": s.identity, "reason": s.reason} for s in sigs])
