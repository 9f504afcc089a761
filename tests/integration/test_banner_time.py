"""``#Time#`` and ``#TimeUTC#`` in the greeting (``[server] banner``): RFC 5322
date-times of the moment the client connected, in the server's time zone and in
UTC, naming the same instant as ``#UnixTime#``."""

from __future__ import annotations

import datetime as dt
import socket
import time
from email.utils import parsedate_to_datetime

from .conftest import read_reply

# A POSIX TZ string needs no zoneinfo: local time is UTC+05:30, so #Time# cannot
# pass for UTC by accident.
TZ = "TST-05:30"


def banner(app) -> str:
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as s:
        reply = read_reply(s).decode()
    assert reply.startswith("220 ") and reply.endswith("\r\n"), reply
    return reply[4:-2]


def test_time_and_utc_time_in_the_banner(make_appliance, monkeypatch):
    monkeypatch.setenv("TZ", TZ)  # the server process inherits it
    app = make_appliance('[server]\nbanner = "#HostName# | #Time# | #TimeUTC# | #UnixTime#"\n')
    before = time.time()
    host, local, utc, unix = banner(app).split(" | ")
    after = time.time()
    assert host == "mx.test.example"
    local_time, utc_time = parsedate_to_datetime(local), parsedate_to_datetime(utc)
    assert local.endswith(" +0530"), local
    assert local_time.utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert utc.endswith(" GMT"), utc
    assert utc_time.utcoffset() == dt.timedelta(0)
    # RFC 5322 3.3 date-time: "Sun, 06 Dec 2026 08:12:35 +0530"
    for text in (local, utc):
        assert text[3:5] == ", " and text[5:7].isdigit() and text[7] == " ", text
    assert local_time == utc_time == dt.datetime.fromtimestamp(int(unix), dt.UTC)
    assert int(before) - 1 <= int(unix) <= after + 1


def test_time_is_taken_at_each_connection(make_appliance):
    app = make_appliance('[server]\nbanner = "#TimeUTC#"\n')
    first = parsedate_to_datetime(banner(app))
    time.sleep(1.1)
    second = parsedate_to_datetime(banner(app))
    assert dt.timedelta(seconds=1) <= second - first < dt.timedelta(seconds=10)
