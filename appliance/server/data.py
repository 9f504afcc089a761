"""DATA and BDAT of one session (RFC 5321 4.1.1.4, RFC 3030): the message read
as it streams in, the header-stage and message hooks, Authentication-Results
(RFC 8601) and the hand-over to the queue."""

from __future__ import annotations

import logging
import time
from typing import Protocol

from appliance import logs
from appliance.config import Listener
from appliance.delivery.before_queue import QueueRefused
from appliance.hooks.host import PluginHost
from appliance.hooks.verdict import Action, Verdict
from appliance.mail import authresults
from appliance.mail.context import SessionContext, Transaction, core_set
from appliance.mail.message import Message, MessageReader, storage_error
from appliance.protocol import Bdat, Data, DataChunk, DataEnd, Reply
from appliance.server import received
from appliance.server.replies import QUEUE_FAILED, TOO_MANY_HOPS, refuses, reply_of
from appliance.server.runtime import Runtime


class Conversation(Protocol):
    """What DATA and BDAT use of their session."""

    runtime: Runtime
    listener: Listener
    ctx: SessionContext
    host: PluginHost
    log: logs.SessionLog
    tx: Transaction | None

    def send(self, reply: Reply) -> None: ...
    def answer(self, verdict: Verdict) -> None: ...
    def drop_transaction(self) -> None: ...
    def begin_data(self) -> None: ...


class DataPhase:
    """The message of the session's transaction while it is read: one per session,
    reset with the transaction."""

    def __init__(self, session: Conversation) -> None:
        self.session = session
        self.reader: MessageReader | None = None
        self.error: Reply | None = None  # the answer at the end of the data, if refused
        self.discard = False  # a header-stage verdict said: accept and drop
        self.verb = "DATA"  # or BDAT: how this message's data is sent

    def reset(self) -> None:
        if self.reader is not None:
            self.reader.close()
        self.reader = None
        self.error = None
        self.discard = False

    def on_data(self, ev: Data) -> None:
        self.verb = "DATA"
        if self._start():
            self.session.send(Reply(354, None, "End data with <CR><LF>.<CR><LF>"))

    def on_bdat(self, ev: Bdat) -> None:
        self.verb = "BDAT"
        if self.reader is None and self.error is None:
            self._start(bdat=True)

    def _start(self, bdat: bool = False) -> bool:
        session = self.session
        verdict, _ = session.host.decide("data_start", session.ctx, session.tx)
        if verdict is not None and refuses(verdict):
            if bdat:  # the chunk is being read anyway; answer at its end
                self.error = reply_of(verdict)
            else:
                session.answer(verdict)
            return False
        limits = session.listener.limits
        self.reader = MessageReader(str(session.runtime.spool.tmp), session.ctx.max_message_size,
                                    int(limits.max_header_size))
        session.begin_data()
        return True

    def on_chunk(self, ev: DataChunk) -> None:
        if self.reader is None or self.error is not None:
            return
        headers = self.reader.feed(ev.data)
        if headers is not None:
            self._headers_stage()

    def _headers_stage(self) -> None:
        session = self.session
        ctx, tx = session.ctx, session.tx
        headers = self.reader.headers
        if headers.count("Received") > ctx.max_received_headers:
            self.error = TOO_MANY_HOPS
            return
        core_set(tx, "headers", headers)
        received.add_received(headers, ctx, tx, session.listener.smtp.received_header,
                              session.forwarded)
        verdict, _ = session.host.decide("headers_received", ctx, tx, headers=headers)
        if verdict is not None and refuses(verdict):
            self.error = reply_of(verdict)
        elif verdict is not None and verdict.action is Action.DISCARD:
            self.discard = True

    def on_end(self, ev: DataEnd) -> None:
        reader = self.reader
        if ev.error is not None:
            self._finish(ev.error)
            return
        if ev.last and self.error is None and reader is not None and reader.error is None:
            if reader.finish() is not None:
                self._headers_stage()
        error = self.error or (reader.error if reader else None)
        if error is not None and reader is not None and reader.storage_failure is not None:
            self._storage_failed(reader.storage_failure)
        if error is not None:  # a failed BDAT chunk ends the transaction (RFC 3030)
            self._finish(error)
        elif not ev.last:
            self.session.send(Reply(250, "2.0.0", f"{reader.received} octets received"))
        else:
            self._deliver()

    def _deliver(self) -> None:
        session = self.session
        ctx, tx, reader = session.ctx, session.tx, self.reader
        message = Message(reader.headers, reader.body)
        core_set(tx, "size", message.size)
        verdict, _ = session.host.decide("message", ctx, tx, message=message)
        if verdict is not None and refuses(verdict):
            self._finish(reply_of(verdict))
            return
        authresults.add_fields(message.headers, ctx.hostname,
                               [*ctx.auth_results, *tx.auth_results],
                               {"client_ip": ctx.remote_ip, "envelope_from": tx.mail_from,
                                "helo": ctx.helo_name})
        core_set(tx, "size", message.size)
        discard = self.discard or (verdict is not None and verdict.action is Action.DISCARD)
        if discard or not tx.recipients:
            session.log.event("discarded", queue_id=tx.queue_id)
            self._count_message(tx)
            self._finish(Reply(250, "2.0.0", f"Ok: queued as {tx.queue_id}"))
            return
        started = time.monotonic()
        try:
            queue_id, plugin = session.runtime.queue(ctx, tx, message)
        except OSError as exc:
            self._storage_failed(exc)
            self._finish(storage_error(exc))
            return
        except QueueRefused as exc:  # a before-queue next hop's answer (docs/delivery.md)
            session.log.event("reply", queue_id=tx.queue_id, reply=str(exc.reply))
            self._finish(Reply(exc.reply.code, exc.reply.enhanced, exc.reply.text))
            return
        except Exception:  # noqa: BLE001 - a queue plugin's failure is a 451
            session.log.exception("queue_failed", queue_id=tx.queue_id)
            self._finish(QUEUE_FAILED)
            return
        if queue_id is None:
            session.log.event("queue_failed", logging.ERROR, queue_id=tx.queue_id,
                              error="no queue plugin")
            self._finish(QUEUE_FAILED)
            return
        self._count_message(tx)
        session.log.queued(ctx, tx, queue_id, plugin, time.monotonic() - started)
        self._finish(Reply(250, "2.0.0", f"Ok: queued as {queue_id}"))

    def _storage_failed(self, exc: OSError) -> None:
        """The message could not be written (disk full, I/O error): an error for the
        admin, whatever the client is told (452 4.3.1 or 451 4.3.0)."""
        session = self.session
        session.log.event("queue_failed", logging.ERROR,
                          queue_id=session.tx.queue_id if session.tx else "",
                          error=f"{type(exc).__name__}: {exc}")

    def _count_message(self, tx: Transaction) -> None:
        ctx = self.session.ctx
        core_set(ctx, "message_count", ctx.message_count + 1)
        core_set(ctx, "total_size", ctx.total_size + tx.size)

    def _finish(self, reply: Reply) -> None:
        self.session.send(reply)
        self.session.drop_transaction()
