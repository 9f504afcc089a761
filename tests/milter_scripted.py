"""A scripted test milter on purepythonmilter (an independent implementation of the
milter side, from PyPI), run as its own process by tests/milter_fixture.py.

No Debian milter emits every reply and modification the protocol has, so this one
does what the message asks (the test drives it through the envelope and headers):

- HELO ``reject-helo.test``: reject; MAIL FROM ``reject-mail@…``: reject;
  ``accept-NAME@…``: accept (nothing more is asked for that message);
- RCPT TO ``tempfail@…``: 451 4.7.1 with its text; ``custom@…``: replycode
  ``553 5.7.2 custom refusal``; ``discard@…``: discard the message; ``shutdown@…``:
  ``421 4.3.2`` (the MTA must close the connection, as Postfix does);
- a body chunk containing ``SKIP-NAME`` (NAME: this milter's ``--name``): SKIP;
  ``CLOSE-NAME``: the milter closes the connection in the middle of the message;
- headers ``X-Test-Action:`` at end of message: ``reject``, ``tempfail``,
  ``discard``, ``hang`` (never answers), ``mods`` (every modification);
- otherwise it adds ``X-Test-Milter: headers=N chunks=M first=<X-First value>``
  and, with ``--add-first``, ``X-First: NAME`` (to show the next milter sees it).

    python -m tests.milter_scripted --port PORT [--name NAME] [--add-first]
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import logging

from purepythonmilter import (
    Accept,
    AddRecipient,
    AddRecipientWithEsmtpArgs,
    AppendHeader,
    ChangeHeader,
    ChangeMailFrom,
    Continue,
    DiscardMessage,
    InsertHeader,
    PurePythonMilter,
    Reject,
    RejectWithCode,
    RemoveRecipient,
    ReplaceBodyChunk,
    SkipToNextStage,
    TempFailWithCode,
)
from purepythonmilter.protocol.payload import Payload
from purepythonmilter.protocol.responses import AbstractManipulation

_state: contextvars.ContextVar[dict] = contextvars.ContextVar("state")
ARGS = argparse.Namespace(name="scripted", add_first=False)


class Quarantine(AbstractManipulation):
    """SMFIR_QUARANTINE (purepythonmilter 0.0.1's own class cannot be built)."""

    response_char = b"q"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def encode(self) -> Payload:
        return Payload(self.response_char + self.reason.encode() + b"\0")


class CloseNow(Exception):
    """Raised in a hook: purepythonmilter drops the connection."""


def state() -> dict:
    try:
        return _state.get()
    except LookupError:
        s = {"headers": [], "chunks": 0}
        _state.set(s)
        return s


async def on_connect(cmd) -> Continue:
    _state.set({"headers": [], "chunks": 0})
    return Continue()


async def on_helo(cmd) -> Continue | Reject:
    if cmd.hostname == "reject-helo.test":
        return Reject()
    return Continue()


async def on_mail_from(cmd) -> Continue | Reject | Accept:
    s = state()
    s["headers"], s["chunks"] = [], 0
    if cmd.address.startswith("reject-mail@"):
        return Reject()
    if cmd.address.startswith(f"accept-{ARGS.name}@"):
        return Accept()
    return Continue()


async def on_rcpt_to(cmd) -> Continue | TempFailWithCode | RejectWithCode | DiscardMessage:
    if cmd.address.startswith("tempfail@"):
        return TempFailWithCode(primary_code=(4, 5, 1), enhanced_code=(4, 7, 1),
                                text="try later, says the milter")
    if cmd.address.startswith("custom@"):
        return RejectWithCode(primary_code=(5, 5, 3), enhanced_code=(5, 7, 2),
                              text="custom refusal")
    if cmd.address.startswith("discard@"):
        return DiscardMessage()
    if cmd.address.startswith("shutdown@"):
        return TempFailWithCode(primary_code=(4, 2, 1), enhanced_code=(4, 3, 2),
                                text="milter shutting down")
    return Continue()


async def on_header(cmd) -> None:  # no reply: SMFIP_NR_HDR is negotiated
    state()["headers"].append((cmd.name, cmd.text))


async def on_body_chunk(cmd) -> Continue | SkipToNextStage:
    s = state()
    s["chunks"] += 1
    if f"CLOSE-{ARGS.name}".encode() in cmd.data_raw:
        raise CloseNow
    if f"SKIP-{ARGS.name}".encode() in cmd.data_raw:
        return SkipToNextStage()
    return Continue()


async def on_end_of_message(cmd) -> Continue | RejectWithCode | TempFailWithCode | DiscardMessage:
    s = state()
    actions = {v.strip() for n, v in s["headers"] if n.lower() == "x-test-action"}
    if "hang" in actions:
        await asyncio.sleep(3600)
    if "reject" in actions:
        return RejectWithCode(primary_code=(5, 5, 4), enhanced_code=(5, 7, 1),
                              text="Rejected by test milter")
    if "tempfail" in actions:
        return TempFailWithCode(primary_code=(4, 5, 1), enhanced_code=(4, 7, 1),
                                text="test milter says later")
    if "discard" in actions:
        return DiscardMessage()
    if "mods" in actions:
        return Continue(manipulations=[
            AppendHeader(headername="X-Added", headertext="appended"),
            InsertHeader(headername="X-Inserted", headertext="on top", index=0),
            ChangeHeader(headername="X-Dup", headertext="second changed", nth_occurrence=2),
            ChangeHeader(headername="X-Remove-Me", headertext="", nth_occurrence=1),
            ChangeMailFrom(mail_from="<bounces@test.example>",
                           esmtp_args={"BODY": "8BITMIME"}),
            AddRecipient(recipient="<added@test.example>"),
            AddRecipientWithEsmtpArgs(recipient="<added-args@test.example>",
                                      esmtp_args={"NOTIFY": "NEVER"}),
            RemoveRecipient(recipient="<removed@test.example>"),
            ReplaceBodyChunk(chunk=b"Replaced body, part one.\r\n"),
            ReplaceBodyChunk(chunk=b"Part two.\r\n"),
            Quarantine(reason="held by the test milter"),
        ])
    first = next((v for n, v in s["headers"] if n == "X-First"), "-")
    mods = [AppendHeader(headername="X-Test-Milter",
                         headertext=f"{ARGS.name} headers={len(s['headers'])} "
                                    f"chunks={s['chunks']} first={first}")]
    if ARGS.add_first:
        mods.append(AppendHeader(headername="X-First", headertext=ARGS.name))
    return Continue(manipulations=mods)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", default="scripted")
    p.add_argument("--add-first", action="store_true")
    p.parse_args(namespace=ARGS)
    logging.basicConfig(level=logging.WARNING)
    milter = PurePythonMilter(
        name=ARGS.name, hook_on_connect=on_connect, hook_on_helo=on_helo,
        hook_on_mail_from=on_mail_from, hook_on_rcpt_to=on_rcpt_to,
        hook_on_header=on_header, hook_on_body_chunk=on_body_chunk,
        hook_on_end_of_message=on_end_of_message,
        can_add_headers=True, can_add_recipients=True,
        can_add_recipients_with_esmtp_args=True, can_change_body=True,
        can_change_headers=True, can_change_mail_from=True, can_remove_recipients=True,
        can_quarantine=True)
    milter.run_server(host="127.0.0.1", port=ARGS.port)


if __name__ == "__main__":
    main()
