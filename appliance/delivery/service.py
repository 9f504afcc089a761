"""The delivery service: takes committed messages out of the spool and hands each
recipient to its next hop (docs/delivery.md).

One gevent process. A scan of ``queue/`` every ``scan_interval`` finds messages
due (new ones, retries whose time has come, ones the ``queue`` command released or
flushed); their due recipients are grouped by next hop into jobs; each next hop has
up to ``parallelism`` connections, each carrying one job after another and closed
after ``idle_timeout`` without work.

Crash safety: a recipient's outcome is appended to the message's state file and
fsynced before anything else happens (the next transaction, a DSN, a log line).
After kill -9 a recipient whose reply had arrived but whose record had not reached
the disk is delivered again: at most once more per crash.
"""

from __future__ import annotations

import fcntl
import math
import signal
import socket
import time
from collections import defaultdict
from datetime import datetime
from typing import Any

import gevent
from attrs import define, field
from gevent.event import Event
from gevent.queue import Empty, Queue

from appliance import logs
from appliance.config.delivery import Delivery, NextHop
from appliance.delivery import dsn, maildir
from appliance.delivery.routing import route
from appliance.delivery.state import MessageState, backoff, fold
from appliance.delivery.transport import Connection, NextHopError, Reply
from appliance.mail.message import Message, MessageReader
from appliance.spool import QueuedMessage, Spool, new_queue_id

#: The delivery service runs the spool's recovery this often (docs/spool.md).
RECOVER_EVERY = 60.0
#: Held (flock) by the one delivery service of a spool, in the spool's directory.
LOCK_FILE = "delivery.lock"


@define
class Job:
    """Recipients of one message for one next hop, for one attempt."""

    message: QueuedMessage
    state: MessageState
    rcpts: list[int]
    recorded: bool = False  # its outcome went through _record_and_finish


@define
class HopQueue:
    """The jobs waiting for one next hop and the connections serving them."""

    name: str
    hop: NextHop
    jobs: Queue = field(factory=Queue)
    workers: int = 0
    idle: int = 0


class Service:
    def __init__(self, config: Delivery, spool: Spool) -> None:
        self.config = config
        self.spool = spool
        self.hostname = config.hostname or socket.getfqdn()
        self.hops: dict[str, HopQueue] = {}
        #: messages with jobs under way: queue id -> jobs left
        self.active: dict[str, int] = {}
        #: messages not due: queue id -> (when to look again, state file mtime)
        self.waiting: dict[str, tuple[float, int]] = {}
        self.wake = Event()
        self.stopping = Event()

    # --- the loop -------------------------------------------------------------------

    def run(self) -> None:
        gevent.signal_handler(signal.SIGTERM, self.stop)
        gevent.signal_handler(signal.SIGINT, self.stop)
        logs.event("delivery_started", hops=",".join(sorted(self.config.next_hops)))
        recovered = 0.0
        while not self.stopping.is_set():
            if time.monotonic() - recovered >= RECOVER_EVERY:
                for path in self.spool.recover():
                    logs.event("spool_recovered", removed=path)
                recovered = time.monotonic()
            self.scan()
            self.wake.wait(self.config.scan_interval)
            self.wake.clear()
        self.drain()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def drain(self, timeout: float = 30.0) -> None:
        """Let transactions under way end (their outcomes recorded), then return."""
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            gevent.sleep(0.05)
        logs.event("delivery_stopped", in_flight=len(self.active))

    def scan(self) -> None:
        now = time.time()
        ids = self.spool.ids()
        for qid in ids:
            if qid in self.active or self.stopping.is_set():
                continue
            cached = self.waiting.get(qid)
            if cached and cached[0] > now and cached[1] == self._state_mtime(qid):
                continue
            self.consider(qid, now)
        for qid in set(self.waiting) - set(ids):
            del self.waiting[qid]

    def _state_mtime(self, qid: str) -> int:
        try:
            return self.spool.state_path(qid).stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def consider(self, qid: str, now: float) -> None:
        """Start the due recipients of one message, or note when to look again."""
        mtime = self._state_mtime(qid)
        try:
            message = self.spool.get(qid)
        except KeyError:
            return
        env = message.envelope
        state = fold(env, self.spool.read_state(qid))
        if env.get("quarantine") and not state.released:
            self.waiting[qid] = (math.inf, mtime)
            return
        delay_until = _timestamp(env.get("delay_until"))
        if delay_until and delay_until > now:
            self.waiting[qid] = (delay_until, mtime)
            return
        if not state.pending:
            self.finish(qid)
            return
        due = state.due(now)
        if not due:
            self.waiting[qid] = (min(state.recipients[i].next_try for i in state.pending), mtime)
            return
        self.waiting.pop(qid, None)
        groups: dict[str | None, list[int]] = defaultdict(list)
        hops: dict[str, NextHop] = {}
        for i in due:
            rcpt = env["recipients"][i]
            found = route(self.config, rcpt["address"], rcpt.get("relay_host", ""))
            if found:
                hops[found[0]] = found[1]
            groups[found[0] if found else None].append(i)
        self.active[qid] = len(groups)
        for name, rcpts in groups.items():
            job = Job(message, state, rcpts)
            if name is None:
                no_route = NextHopError("no next hop for this recipient in [delivery]", "4.3.5")
                gevent.spawn(self._record_and_finish, job, "none", no_route.reply_all(rcpts))
            else:
                self._queue_for(name, hops[name], job)

    def finish(self, qid: str) -> None:
        """Every recipient is done or bounced: the message leaves the spool."""
        try:
            self.spool.delete(qid)
        except KeyError:
            return
        self.waiting.pop(qid, None)
        logs.event("removed", queue_id=qid)

    # --- next hops --------------------------------------------------------------------

    def _queue_for(self, name: str, hop: NextHop, job: Job) -> None:
        hq = self.hops.get(name)
        if hq is None or hq.hop != hop:
            hq = self.hops[name] = HopQueue(name, hop)
        hq.jobs.put(job)
        if hq.jobs.qsize() > hq.idle and hq.workers < hop.parallelism:
            hq.workers += 1
            gevent.spawn(self._work, hq)

    def _work(self, hq: HopQueue) -> None:
        """One connection's life: jobs one after another until idle_timeout."""
        conn: Connection | None = None
        try:
            while True:
                hq.idle += 1
                try:
                    job = hq.jobs.get(timeout=self.config.idle_timeout)
                except Empty:
                    break
                finally:
                    hq.idle -= 1
                try:
                    conn = self._attempt(hq, conn, job)
                except Exception:  # noqa: BLE001 - a bug must not strand the message
                    logs.log.exception("delivery_failed queue_id=%s", job.message.queue_id)
                    if conn is not None:
                        conn.close()
                    conn = None
                    if not job.recorded:
                        error = NextHopError("internal error in the delivery service", "4.3.0")
                        self._record_and_finish(job, hq.name, error.reply_all(job.rcpts))
        finally:
            hq.workers -= 1
            if conn is not None:
                conn.close()

    def _attempt(self, hq: HopQueue, conn: Connection | None, job: Job) -> Connection | None:
        env = job.message.envelope
        rcpts = [(i, env["recipients"][i]) for i in job.rcpts]
        replies: dict[int, Reply] = {}
        relay = hq.name
        if hq.hop.protocol == "maildir":
            pool = gevent.get_hub().threadpool
            replies = {i: pool.apply(maildir.deliver, (hq.hop, r["address"], r.get("folder", ""),
                                                       job.message.message_path, self.spool.fsync))
                       for i, r in rcpts}
            self._record_and_finish(job, f"{hq.name}[maildir]", replies)
            return None
        try:
            if conn is None:
                conn = Connection(hq.name, hq.hop, self.config)
            relay = conn.where
            with open(job.message.message_path, "rb") as lines:
                replies = conn.send(env, rcpts, lines, job.message.size)
        except NextHopError as exc:
            partial = getattr(exc, "partial", {})
            replies = {**exc.reply_all(job.rcpts), **partial}
            logs.event("next_hop_failed", level=30, relay=relay, reason=exc.reason)
            if conn is not None:
                conn.close()
            conn = None
        self._record_and_finish(job, relay, replies, bool(conn and conn.dsn))
        return conn

    # --- outcomes ------------------------------------------------------------------------

    def _record_and_finish(self, job: Job, relay: str, replies: dict[int, Reply],
                           passed_dsn: bool = False) -> None:
        job.recorded = True
        qid = job.message.queue_id
        pause = 0.0
        try:
            self.record(job, relay, replies, passed_dsn)
        except OSError as exc:
            # The spool cannot be written (disk full): not again at once, or every
            # attempt would deliver a copy it cannot record.
            logs.event("state_failed", level=40, queue_id=qid, error=str(exc))
            pause = self.config.minimal_backoff
        except KeyError:  # deleted meanwhile (queue delete)
            pass
        finally:
            self.active[qid] -= 1
            if self.active[qid] <= 0:
                del self.active[qid]
                if pause:
                    self.waiting[qid] = (time.time() + pause, self._state_mtime(qid))
                elif not self.stopping.is_set():
                    self.consider(qid, time.time())

    def record(self, job: Job, relay: str, replies: dict[int, Reply], passed_dsn: bool) -> None:
        """Make the outcomes durable first (done and deferred at once; a bounce after
        its DSN is in the spool, so a crash repeats a DSN rather than lose it), then
        send the DSNs asked for, then log."""
        message, state = job.message, job.state
        env, qid = message.envelope, message.queue_id
        now = time.time()
        received = _timestamp(env.get("received_at")) or now
        null_sender = not env["mail_from"]["address"]
        lifetime = self.config.bounce_lifetime if null_sender else self.config.queue_lifetime
        first, bounces, events, notices = [], [], [], defaultdict(list)
        for i, reply in sorted(replies.items()):
            r, rcpt = state.recipients[i], env["recipients"][i]
            attempts = r.attempts + 1
            rec = {"rcpt": i, "attempts": attempts, "status": reply.enhanced,
                   "reason": str(reply), "relay": relay, "at": round(now, 3)}
            outcome, event = reply.outcome, None
            if outcome == "deferred" and now - received >= lifetime:
                outcome, event = "bounced", "expired"
                rec.update(status="4.4.7", reason=f"delivery time expired: {reply}")
            if outcome == "deferred":
                rec["next_try"] = round(now + backoff(attempts, self.config.minimal_backoff,
                                                      self.config.maximal_backoff), 3)
                if (self.config.delay_warning and not r.delay_notified
                        and now - received >= self.config.delay_warning
                        and dsn.wanted(rcpt, "delayed")):
                    notices["delayed"].append(dsn.Entry(rcpt, "delayed", reply.enhanced,
                                                        str(reply), relay, received + lifetime))
                    rec["delay_notified"] = True
            rec["state"] = outcome
            (bounces if outcome == "bounced" else first).append(rec)
            if outcome == "bounced" and dsn.wanted(rcpt, "failed"):
                notices["failed"].append(
                    dsn.Entry(rcpt, "failed", rec["status"], str(reply), relay))
            if outcome == "done" and not passed_dsn and dsn.wanted(rcpt, "delivered"):
                action = "relayed" if job_protocol(relay, self.config) == "smtp" else "delivered"
                notices[action].append(dsn.Entry(rcpt, action, reply.enhanced, str(reply), relay))
            events.append((event or {"done": "delivered"}.get(outcome, outcome), rec, rcpt))
            r.state, r.attempts, r.next_try = outcome, attempts, rec.get("next_try", 0.0)
            r.delay_notified = r.delay_notified or rec.get("delay_notified", False)
        pool = gevent.get_hub().threadpool
        if first:
            pool.apply(self.spool.append_state, (qid, first))
        for action, entries in notices.items():
            if not null_sender:
                self.send_dsn(message, entries, action)
        if bounces:
            pool.apply(self.spool.append_state, (qid, bounces))
        for name, rec, rcpt in events:
            logs.event(name, queue_id=qid,
                       to=rcpt["address"], relay=relay, status=rec["status"],
                       reply=rec["reason"], delay=round(now - received, 1),
                       attempts=rec["attempts"])

    def send_dsn(self, message: QueuedMessage, entries: list[dsn.Entry], action: str) -> None:
        """Commit a DSN to the spool; the next scan delivers it."""
        data = dsn.compose(message.envelope, message.message_path, entries, self.hostname)
        reader = MessageReader(str(self.spool.tmp), len(data) + 1, len(data) + 1)
        reader.feed(data)
        reader.finish()
        qid = new_queue_id()
        envelope = dsn.envelope_for(message.envelope, qid)
        gevent.get_hub().threadpool.apply(
            self.spool.commit, (qid, Message(reader.headers, reader.body), envelope))
        logs.event("dsn_sent", queue_id=message.queue_id, dsn_id=qid, action=action,
                   to=envelope["recipients"][0]["address"],
                   recipients=",".join(e.rcpt["address"] for e in entries))
        self.wake.set()


def job_protocol(relay: str, config: Delivery) -> str:
    name = relay.partition("[")[0]
    hop = config.next_hops.get(name)
    return hop.protocol if hop else "smtp"


def _timestamp(iso: str | None) -> float | None:
    """An envelope's ISO 8601 UTC time (2026-11-23T19:10:04Z, or with +00:00)."""
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def main(config: Any) -> int:
    """``smtp-appliance deliver``: run the service until SIGTERM. One delivery
    service per spool: a second one waits for the first's lock (a respawned service
    waits until the one it replaces is really gone)."""
    logs.setup(config.logging)
    spool = Spool(config.queue.directory, fsync=config.queue.fsync)
    spool.prepare()
    if not (config.delivery.enabled and config.delivery.next_hops):
        logs.event("delivery_off", level=30, note="[delivery] has no next_hops or is disabled")
        stop = Event()
        gevent.signal_handler(signal.SIGTERM, stop.set)
        gevent.signal_handler(signal.SIGINT, stop.set)
        stop.wait()
        return 0
    with open(spool.directory / LOCK_FILE, "a+b") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logs.event("delivery_waiting", level=30, lock=str(spool.directory / LOCK_FILE),
                       note="another delivery service runs on this spool")
            gevent.get_hub().threadpool.apply(fcntl.flock, (lock.fileno(), fcntl.LOCK_EX))
        Service(config.delivery, spool).run()
    return 0
