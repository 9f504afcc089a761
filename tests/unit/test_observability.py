"""Event classes, the journal's native protocol, the transcript's redaction and the
metrics' mapping from events, without a server (the server tests:
tests/integration/test_logging_classes.py, test_metrics_stats.py)."""

from __future__ import annotations

import logging
import struct

import pytest

from appliance import logs
from appliance.config.schema import LogClasses, Logging
from appliance.config.units import LogOutputs
from appliance.log_outputs import JournalHandler, _field
from appliance.metrics import Metrics, samples
from appliance.protocol import Auth, AuthResponse, BadCommand, Helo, Mail, Reply
from appliance.server import transcript


@pytest.mark.parametrize(("name", "logger", "cls"), [
    ("connect", "smtp_appliance", "connection"),
    ("tls_failed", "smtp_appliance", "tls"),
    ("auth_failed", "smtp_appliance", "auth"),
    ("command", "smtp_appliance", "transcript"),
    ("reply", "smtp_appliance", "verdict"),
    ("queued", "smtp_appliance", "queue"),
    ("disconnect", "smtp_appliance", "disconnect"),
    # the delivery side's events, and ones it may add
    *[(n, "smtp_appliance", "delivery")
      for n in ("delivered", "deferred", "bounced", "expired", "dsn_sent", "released")],
    ("delivery_retry_scheduled", "smtp_appliance", "delivery"),
    ("tls_session_resumed", "smtp_appliance", "tls"),
    # unknown names: by logger, then server
    ("policy_reject", "smtp_appliance.policy", "verdict"),
    ("session %s: spf %s for %s: %s", "smtp_appliance.spf", "verdict"),
    ("users_file_reloaded", "smtp_appliance.auth", "auth"),
    ("listening", "smtp_appliance", "server"),
    ("something_new", "smtp_appliance", "server"),
])
def test_event_classes(name, logger, cls):
    assert logs.event_class(name, logger) == cls


@pytest.fixture
def thresholds():
    saved = dict(logs._thresholds), logs.log.level
    yield
    logs._thresholds.update(saved[0])
    logs.log.setLevel(saved[1])


def test_a_class_follows_the_level_unless_it_has_its_own(thresholds):
    logs.configure(Logging(level="warning", classes=LogClasses(connection="debug",
                                                               queue="off")))
    assert logs.enabled("connect", logging.DEBUG)
    assert not logs.enabled("reply", logging.INFO) and logs.enabled("reply", logging.WARNING)
    assert not logs.enabled("queue_failed", logging.ERROR)  # off: not even errors
    assert not logs.enabled("command", logging.ERROR)  # transcript: off by default
    assert logs.log.level == logging.DEBUG  # the lowest threshold reaches the handlers


def test_observers_see_events_that_are_not_logged(thresholds):
    logs.configure(Logging(classes=LogClasses(queue="off")))
    seen = []
    logs.observe(lambda name, fields: seen.append((name, fields)))
    try:
        logs.SessionLog("S1").event("queued", queue_id="Q1")
    finally:
        logs.forget_observers()
    assert seen == [("queued", {"session": "S1", "queue_id": "Q1"})]


def parse_journal(datagram: bytes) -> dict[str, str]:
    """systemd's native protocol, read as journald reads it."""
    fields, rest = {}, datagram
    while rest:
        line, sep, after = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            rest = after
        else:  # NAME\n, 64-bit little-endian length, value, \n
            (size,) = struct.unpack("<Q", after[:8])
            fields[line.decode()] = after[8:8 + size].decode()
            assert after[8 + size:9 + size] == b"\n"
            rest = after[9 + size:]
    return fields


def test_journal_fields_and_a_value_with_a_newline():
    assert _field("TEXT", "a\nb") == b"TEXT\n" + struct.pack("<Q", 3) + b"a\nb\n"
    record = logging.LogRecord("smtp_appliance", logging.WARNING, "", 0, "reply", (), None)
    record.fields = {"session": "S", "queue_id": "Q", "text": "two\nlines", "priority": 1}
    record.event_class = "verdict"
    handler = JournalHandler.__new__(JournalHandler)  # no socket: only the datagram
    handler.facility = 2
    got = parse_journal(handler.datagram(record))
    assert got["PRIORITY"] == "4" and got["SYSLOG_IDENTIFIER"] == "smtp-appliance"
    assert got["EVENT"] == "reply" and got["EVENT_CLASS"] == "verdict"
    assert got["SESSION"] == "S" and got["QUEUE_ID"] == "Q" and got["TEXT"] == "two\nlines"
    assert got["SMTP_PRIORITY"] == "1"  # an event's field never overwrites the journal's
    assert got["MESSAGE"].startswith("reply session=S queue_id=Q")


def test_the_transcript_never_shows_auth_data():
    secret = "c2VjcmV0"
    assert transcript.command(Auth("PLAIN", secret)) == \
        "AUTH PLAIN (initial response not logged)"
    assert transcript.command(Auth("LOGIN")) == "AUTH LOGIN"
    assert secret not in transcript.command(AuthResponse(secret))
    refused = BadCommand(Reply(501, "5.5.2", "Bad"), "AUTH")
    assert transcript.command(refused) == "AUTH (refused command, arguments not logged)"
    assert transcript.command(Helo("client.example", True)) == "EHLO client.example"
    assert transcript.command(Mail("a@example.org", {"SIZE": "10", "SMTPUTF8": True})) == \
        "MAIL FROM:<a@example.org> SIZE=10 SMTPUTF8"


def test_metrics_from_events():
    m = Metrics()
    for name, fields in [
        ("connect", {"listener": "mta"}), ("connect", {"listener": "mta"}),
        ("too_busy", {"listener": "mta"}),
        ("tls", {"protocol": "TLSv1.3"}),
        ("auth", {"mechanism": "PLAIN"}), ("auth_failed", {"mechanism": "LOGIN"}),
        ("queued", {"size": 100, "rcpts": 2, "seconds": 0.01, "checks": "spf:pass"}),
        ("queued", {"size": 50, "rcpts": 1}),
        ("reply", {"command": "RCPT", "code": 550, "enhanced": "5.7.1", "by": "relay"}),
        ("replies_not_logged", {"command": "RCPT", "code": 550, "enhanced": "5.7.1",
                                "count": 5}),
        ("delivered", {"delay": 3.5}), ("deferred", {}),
        ("disconnect", {"listener": "mta", "seconds": 1.0, "checks": "reverse-dns:pass"}),
        ("some_other_event", {}),
    ]:
        m.observe(name, fields)
    got = samples(m.collector_registry())

    def value(name, **labels):
        return sum(v for ls, v in got[f"smtp_appliance_{name}"] if labels.items() <= ls.items())

    assert value("connections_total", outcome="accepted") == 2
    assert value("connections_total", outcome="too_busy") == 1
    assert value("sessions_open", listener="mta") == 1
    assert value("messages_accepted_total") == 2 and value("message_bytes_total") == 150
    assert value("recipients_accepted_total") == 3
    assert value("tls_sessions_total", version="TLSv1.3") == 1
    assert value("auth_total", mechanism="PLAIN", result="success") == 1
    assert value("auth_total", mechanism="LOGIN", result="failure") == 1
    assert value("refusals_total", plugin="relay") == 1
    assert value("refusals_total", command="RCPT") == 6
    assert value("check_results_total", check="spf", result="pass") == 1
    assert value("check_results_total", check="reverse-dns", result="pass") == 1
    assert value("deliveries_total", outcome="delivered") == 1
    assert value("delivery_delay_seconds_count") == 1
    assert value("queue_commit_seconds_count") == 1
    assert value("session_seconds_count") == 1


def test_syslog_over_udp_to_inet_host_port():
    """``syslog_address = "inet:127.0.0.1:PORT"``: one UDP datagram per line, to a
    socket of this test standing in for a remote syslog daemon."""
    import socket

    from appliance.log_outputs import make_handlers

    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    try:
        config = Logging(destination=LogOutputs("syslog"), syslog_facility="local1",
                         syslog_address=f"inet:127.0.0.1:{receiver.getsockname()[1]}")
        (handler,) = make_handlers(config, logs.TextFormatter())
        record = logging.LogRecord("smtp_appliance", logging.ERROR, "", 0, "queue_failed", (),
                                   None)
        record.fields = {"queue_id": "Q1"}
        handler.emit(record)
        handler.close()
        datagram = receiver.recv(65536)
    finally:
        receiver.close()
    assert datagram.startswith(b"<%d>" % (17 * 8 + 3))  # local1, error
    assert b" error queue_failed queue_id=Q1" in datagram
