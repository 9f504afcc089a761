"""Authentication-Results (RFC 8601) and Received-SPF (RFC 7208 9.1).

Checks record what they found; the session writes the fields once, at the end
of data after every ``on_message`` plugin has run (so DKIM and DMARC, computed
there, are in), just before the message is queued. A result about the
connection (iprev, a DNSBL) goes in ``session.auth_results`` and is reported in
every message of the session; one about a message (spf, dkim, dmarc) goes in
``transaction.auth_results``::

    from appliance.mail.authresults import AuthResult
    transaction.auth_results.append(AuthResult(
        "spf", "pass", properties={"smtp.mailfrom": "alice@example.org"}))

Fields claiming our own authserv-id that arrive with the message are forged or
stale (RFC 8601 5) and are removed.
"""

from __future__ import annotations

import re
from typing import Any

from attrs import field, frozen

from appliance.mail.headers import Headers

__all__ = ["AuthResult", "add_fields", "authserv_id_of", "format_value"]

_TOKEN = re.compile(r"[^\s;()\"\\,]+\Z")  # a pvalue that needs no quoting (RFC 8601 2.2)


@frozen
class AuthResult:
    """One method's result: ``spf=fail reason="..." smtp.mailfrom=a@b (comment)``."""

    method: str  # spf, dkim, dmarc, iprev, dnsbl, ... (lower case)
    result: str  # pass, fail, softfail, neutral, none, temperror, permerror, ...
    properties: dict[str, str] = field(factory=dict, converter=dict)  # ptype.property -> value
    reason: str = ""
    comment: str = ""

    def render(self) -> str:
        text = f"{self.method}={self.result}"
        if self.comment:
            text += f" ({_comment(self.comment)})"
        if self.reason:
            text += f" reason={_quoted(self.reason)}"
        for key, value in self.properties.items():
            text += f" {key}={format_value(value)}"
        return text


def format_value(value: str) -> str:
    """A property value as written: bare when it is a token or an address."""
    return value if value and _TOKEN.match(value) else _quoted(value)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> str:
    return re.sub(r"[()\\\r\n]", " ", text)


def authserv_id_of(value: str) -> str:
    """The authserv-id an Authentication-Results value starts with."""
    head = re.sub(r"\([^)]*\)", " ", value).split(";", 1)[0].strip()
    return head.split()[0].lower() if head else ""


def add_fields(headers: Headers, hostname: str, results: list[AuthResult],
               envelope: dict[str, Any] | None = None) -> bool:
    """Remove incoming fields with our authserv-id, then put one Authentication-Results
    (and, if SPF ran, Received-SPF) on top. ``envelope`` gives Received-SPF its
    key-value pairs: client_ip, envelope_from, helo. Nothing is added when no check
    ran. Returns True if a field was added."""
    for value in headers.get_all("Authentication-Results"):
        if authserv_id_of(value) == hostname.lower():
            headers.remove_value("Authentication-Results", value)
    if not results:
        return False
    spf = next((r for r in results if r.method == "spf"), None)
    if spf is not None:
        headers.add("Received-SPF", received_spf(spf, hostname, envelope or {}), prepend=True)
    body = ";\r\n\t".join([hostname, *(r.render() for r in results)])
    headers.add("Authentication-Results", body, prepend=True)
    return True


_SPF_RESULT = {"pass": "Pass", "fail": "Fail", "softfail": "SoftFail", "neutral": "Neutral",
               "none": "None", "temperror": "TempError", "permerror": "PermError"}


def received_spf(spf: AuthResult, hostname: str, envelope: dict[str, Any]) -> str:
    """``Pass (comment) client-ip=...; envelope-from=...; helo=...; receiver=...;
    identity=mailfrom``."""
    identity = "helo" if "smtp.helo" in spf.properties else "mailfrom"
    pairs = [("client-ip", envelope.get("client_ip", "")),
             ("envelope-from", envelope.get("envelope_from", "")),
             ("helo", envelope.get("helo", "")),
             ("receiver", hostname), ("identity", identity)]
    text = _SPF_RESULT.get(spf.result, spf.result)
    if spf.comment or spf.reason:
        text += f" ({_comment(spf.comment or spf.reason)})"
    kv = "; ".join(f"{k}={format_value(str(v))}" for k, v in pairs if v)
    return f"{text}\r\n\t{kv}" if kv else text
