"""The milter client: the MTA side of the Sendmail milter protocol (versions 2-6).

- ``codec``: the frames, option negotiation, what each response means (no I/O);
- ``client``: one connection to one milter, with its timeouts;
- ``chain``: the milters of one session in configured order, verdicts, default
  actions, modifications applied through the core's operations;
- the built-in ``milter`` plugin (plugins/milter.py) drives a chain per session,
  made of the milters of the session's listener (``[milter]`` or
  ``[listeners.NAME.milter]``).

For rules (Axigen's addFilter / executeFilters): ``chain_of(session)`` gives the
session's :class:`MilterChain`, whose ``add(name)`` and ``execute(pattern, stage,
…)`` are documented in docs/plugins.md.
"""

from __future__ import annotations

from typing import Any

from appliance.clients.milter.chain import FilterResult, MilterChain
from appliance.clients.milter.client import MilterClient, MilterFailure, MilterSpec, parse_socket

#: The key of the session's chain in ``session.stash``.
STASH_KEY = "milter"


def chain_of(session: Any) -> MilterChain | None:
    """The milters of this session's listener (None when it has none)."""
    return session.stash.get(STASH_KEY)


__all__ = ["STASH_KEY", "FilterResult", "MilterChain", "MilterClient", "MilterFailure",
           "MilterSpec", "chain_of", "parse_socket"]
