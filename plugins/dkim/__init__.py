"""DKIM verification at the end of data: every DKIM-Signature of the message is
verified (dkimpy, keys looked up through the appliance's resolver) and reported in
Authentication-Results (``dkim=pass header.d=example.org ...``).

The plugin owns the ``[dkim]`` area (per listener in ``[listeners.NAME.dkim]``).
It refuses nothing by itself: DMARC (``plugins/dmarc/``) decides what a failed
signature means, from the results kept here for the message.
"""

from __future__ import annotations

import io
import logging
from typing import Annotated, Any

from attrs import frozen

from appliance import (
    AuthResult,
    Check,
    Duration,
    PerListener,
    PluginConfig,
    Size,
    hookimpl,
    per_listener,
)

from .verify import Signature, verify

log = logging.getLogger("smtp_appliance.dkim")

STASH = "dkim"


@frozen(kw_only=True)
class DkimArea:
    """``[dkim]`` and ``[listeners.NAME.dkim]``."""

    timeout: Duration = Duration("5s")
    max_signatures: Annotated[int, Check(lambda v: 1 <= v <= 50, "an integer from 1 to 50")] = 5
    min_key_bits: Annotated[int, Check(lambda v: 512 <= v <= 16384,
                                       "an integer from 512 to 16384")] = 1024
    max_message_size: Size = Size("10 MiB")


def signatures(session: Any, transaction: Any, message: Any, area: DkimArea,
               dns: Any) -> list[Signature]:
    """The DKIM results of this message, verified once whoever asks first (the dkim
    plugin, or dmarc when dkim is disabled) and recorded for Authentication-Results."""
    kept = session.stash.get(STASH)
    if kept is not None and kept[0] == transaction.queue_id:
        return kept[1]
    if message.size > area.max_message_size:
        found = [Signature("policy", reason="message too large to verify")] if any(
            n.lower() == "dkim-signature" for n, _ in message.headers) else [Signature("none")]
    elif dns is None:
        found = [Signature("temperror", reason="no resolver")]
    else:
        data = io.BytesIO()  # dkimpy verifies bytes in memory: bounded by max_message_size
        message.write_to(data)
        found = verify(data.getvalue(), dns.budget(float(area.timeout)),
                       area.max_signatures, area.min_key_bits)
    session.stash[STASH] = (transaction.queue_id, found)
    transaction.auth_results.extend(s.auth_result() for s in found)
    if log.isEnabledFor(logging.DEBUG):
        for s in found:
            log.debug("dkim_result", extra={"fields": {
                "session": session.session_id, "queue_id": transaction.queue_id,
                "result": s.result, "domain": s.domain, "selector": s.selector,
                "reason": s.reason}})
    return found


class DkimPlugin:
    """Built-in plugin ``dkim``: owns ``[dkim]``; verifies at ``on_message``."""

    area = "dkim"
    Area = DkimArea

    @frozen(kw_only=True)
    class Config(PluginConfig):
        enabled: bool = False  # DNS lookups for every message: an admin's choice
        priority: int = 60  # before dmarc (70), which uses the results

    def __init__(self, config: PluginConfig) -> None:
        self.config = config
        self.areas: PerListener[DkimArea] = PerListener(DkimArea())
        self.dns: Any = None

    @hookimpl
    def on_configure(self, config: Any, dns: Any) -> None:
        self.dns = dns
        self.areas = per_listener(config, self.area, DkimArea, lambda area: area)

    @hookimpl
    def on_message(self, session: Any, transaction: Any, message: Any) -> None:
        signatures(session, transaction, message, self.areas.of(session), self.dns)


def auth_results_of(transaction: Any, method: str) -> list[AuthResult]:
    return [r for r in transaction.auth_results if getattr(r, "method", "") == method]
