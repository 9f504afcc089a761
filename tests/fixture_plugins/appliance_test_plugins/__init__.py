"""Plugins the integration tests enable through conf.d (all off by default)."""

from __future__ import annotations

import time

from attrs import field, frozen

from appliance import Action, Duration, PluginConfig, Verdict, hookimpl

EVENTS = ("connect", "ehlo", "mail_from", "rcpt_to", "data_start", "headers_received",
          "message")


@frozen(kw_only=True)
class Rule:
    event: str
    action: str
    match: str = ""  # substring of the event's subject (address, helo name, user, remote ip)
    code: int | None = None
    enhanced: str | None = None
    text: str | None = None


def _subject(event, session, transaction, recipient, hostname):
    if event in ("ehlo", "auth"):
        return hostname or ""
    if event == "rcpt_to":
        return recipient.address
    if event in ("mail_from", "data_start", "headers_received", "message"):
        return transaction.mail_from
    return session.remote_ip


class Scripted:
    """Answers events with verdicts listed in config."""

    @frozen(kw_only=True)
    class Config(PluginConfig):
        enabled: bool = False
        rules: list[Rule] = field(factory=list)

    def __init__(self, config):
        self.rules = config.rules

    def _decide(self, event, session, transaction=None, recipient=None, hostname=None):
        for r in self.rules:
            if r.event == event and r.match in _subject(event, session, transaction,
                                                         recipient, hostname):
                return Verdict(Action(r.action), r.code, r.enhanced, r.text)
        return None

    @hookimpl
    def on_connect(self, session):
        return self._decide("connect", session)

    @hookimpl
    def on_ehlo(self, session, hostname):
        return self._decide("ehlo", session, hostname=hostname)

    @hookimpl
    def on_auth(self, session, username):
        return self._decide("auth", session, hostname=username)  # matched on the user

    @hookimpl
    def on_mail_from(self, session, transaction):
        return self._decide("mail_from", session, transaction)

    @hookimpl
    def on_rcpt_to(self, session, transaction, recipient):
        return self._decide("rcpt_to", session, transaction, recipient)

    @hookimpl
    def on_data_start(self, session, transaction):
        return self._decide("data_start", session, transaction)

    @hookimpl
    def on_headers_received(self, session, transaction):
        return self._decide("headers_received", session, transaction)

    @hookimpl
    def on_message(self, session, transaction):
        return self._decide("message", session, transaction)


class _OneEvent:
    @frozen(kw_only=True)
    class Config(PluginConfig):
        enabled: bool = False
        event: str = "rcpt_to"
        delay: Duration = Duration(5.0)

    def __init__(self, config):
        self.config = config

    def _act(self, event):
        raise NotImplementedError

    @hookimpl
    def on_connect(self, session):
        return self._act("connect")

    @hookimpl
    def on_mail_from(self, session):
        return self._act("mail_from")

    @hookimpl
    def on_rcpt_to(self, session):
        return self._act("rcpt_to")

    @hookimpl
    def on_message(self, session):
        return self._act("message")


class Raiser(_OneEvent):
    """Raises in the configured event: the client must get 451 4.3.0."""

    def _act(self, event):
        if event == self.config.event:
            raise RuntimeError(f"test-raise in {event}")


class Slow(_OneEvent):
    """Sleeps (cooperatively) in the configured event; ``event = "queue_message"``
    sleeps in that first-result hook, then lets the spool queue the message."""

    def _act(self, event):
        if event == self.config.event:
            time.sleep(float(self.config.delay))

    @hookimpl
    def queue_message(self, session):
        return self._act("queue_message")


class Editor:
    """Exercises recipient and header operations."""

    @frozen(kw_only=True)
    class Config(PluginConfig):
        enabled: bool = False
        delay_delivery: str = ""

    def __init__(self, config):
        self.config = config

    @hookimpl
    def on_rcpt_to(self, transaction, recipient):
        local = recipient.local_part
        if local == "discard":
            transaction.discard_recipient()
        elif local == "rewrite":
            recipient.address = "rewritten@" + recipient.domain
            recipient.folder = "Archive"
            recipient.relay_host = "[192.0.2.1]:25"
        elif local == "copy":
            transaction.add_recipient("copy-extra@" + recipient.domain, folder="Copies")
        elif local == "dropme":
            return Verdict.discard()
        return None

    @hookimpl
    def on_headers_received(self, headers):
        headers.add("X-Test-Edit", "headers-stage")
        headers.remove("X-Remove-Me")
        headers.remove_value("X-Multi", "two")
        headers.modify_if_exists("Subject", "edited subject")
        headers.add_if_absent("X-Absent", "added")
        headers.add_if_absent("X-Present", "not-added")

    @hookimpl
    def on_message(self, transaction, message):
        message.headers.add("X-Test-End", f"size={message.body.size}")
        if self.config.delay_delivery:
            transaction.delay_delivery(self.config.delay_delivery)


class ContextRules:
    """Checks read-only rules, then tightens a writable limit."""

    @frozen(kw_only=True)
    class Config(PluginConfig):
        enabled: bool = False
        max_recipients: int = 2

    def __init__(self, config):
        self.config = config

    @hookimpl
    def on_mail_from(self, session, transaction):
        for name, value in (("remote_ip", "203.0.113.9"), ("helo_name", "forged")):
            try:
                setattr(session, name, value)
            except AttributeError:
                continue
            return Verdict.reject(f"could write read-only {name}", 550, "5.3.0")
        try:
            transaction.mail_from = "forged@example.org"
        except AttributeError:
            pass
        else:
            return Verdict.reject("could write read-only mail_from", 550, "5.3.0")
        session.max_recipients = self.config.max_recipients
        return None


class BadHook:
    """Implements a hook that does not exist: must be skipped with an error."""

    @frozen(kw_only=True)
    class Config(PluginConfig):
        enabled: bool = False

    def __init__(self, config):
        pass

    @hookimpl
    def on_rcpt(self, session):  # typo of on_rcpt_to
        return Verdict.reject("should never run")


class Wrapper:
    """Implements a hook as a pluggy wrapper: must be skipped with an error, not
    turned into a 451 at every MAIL FROM."""

    @frozen(kw_only=True)
    class Config(PluginConfig):
        enabled: bool = False

    def __init__(self, config):
        pass

    @hookimpl(wrapper=True)
    def on_mail_from(self, session):
        return (yield)


@frozen(kw_only=True)
class NoticeReply:
    text: str = "refused by test-notice"
    enhanced: str = "5.7.1"


@frozen(kw_only=True)
class NoticeArea:
    code: int = 550
    reply: NoticeReply = field(factory=NoticeReply)


class AreaNotice:
    """Owns the [test-notice] area and refuses MAIL FROM with the effective reply of
    the session's listener: per-listener area settings reaching a hook."""

    area = "test-notice"
    Area = NoticeArea

    @frozen(kw_only=True)
    class Config(PluginConfig):
        enabled: bool = False

    def __init__(self, config):
        self.areas = {}

    @hookimpl
    def on_configure(self, config):
        self.areas = {name: lc.areas["test-notice"] for name, lc in config.listeners.items()}

    @hookimpl
    def on_mail_from(self, session):
        area = self.areas[session.listener]
        return Verdict.reject(area.reply.text, area.code, area.reply.enhanced)
