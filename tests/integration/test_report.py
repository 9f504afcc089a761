"""``smtp-appliance report`` over the log of a scripted run of the real server, in
both formats: exact numbers of messages, bytes, senders, recipients, client hosts,
refusals by reason and per hour; ``--since`` leaves older lines out."""

from __future__ import annotations

import json
import smtplib
import time

import pytest

from tests.peers import wait_for

from .test_receive import MSG


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_report_of_a_scripted_run(make_appliance, tmp_path, fmt):
    log_file = tmp_path / "mail.log"
    app = make_appliance(f"""
        [logging]
        destination = "file"
        file = "{log_file}"
        format = "{fmt}"
        [access]
        deny = ["127.0.0.2"]
        """)
    for sender, rcpts in [("a@example.org", ["b@example.net", "c@example.net"]),
                          ("a@example.org", ["b@example.net"]),
                          ("a@example.org", ["b@example.net", "c@example.net"]),
                          ("x@example.com", ["b@example.net"])]:
        with smtplib.SMTP("127.0.0.1", app.port, timeout=10) as c:
            assert c.sendmail(sender, rcpts, MSG) == {}
    with pytest.raises(smtplib.SMTPConnectError):
        smtplib.SMTP("127.0.0.1", app.port, timeout=10, source_address=("127.0.0.2", 0))
    with smtplib.SMTP("127.0.0.1", app.port, timeout=10) as c:
        c.ehlo("client.example")
        assert c.docmd("MAIL FROM:<not an address")[0] == 501
        assert c.docmd("MAIL FROM:<not an address")[0] == 501
    wait_for(lambda: log_file.read_text().count("disconnect") == 7)  # and the probe's
    sizes = [json.loads(p.read_text())["size"] for p in app.queued()]
    assert len(sizes) == 4

    got = app.cli("report", "--log", str(log_file), "--json")
    assert got.returncode == 0, got.stderr
    r = json.loads(got.stdout)
    assert (r["received"], r["bytes"], r["recipients"], r["refused"]) == (4, sum(sizes), 6, 3)
    assert r["connections"] >= 7  # the fixture's readiness probe connects too
    assert r["senders"] == [["<a@example.org>", 3, sum(sizes[:3])],
                            ["<x@example.com>", 1, sizes[3]]]
    assert r["recipients_top"] == [["<b@example.net>", 4], ["<c@example.net>", 2]]
    assert r["clients"] == [["unknown[127.0.0.1]", 4]]
    assert r["refusals"][0][1] == 2 and r["refusals"][0][0].startswith("501 5.5.")
    assert r["refusals"][1] == ["554 5.7.1 mx.test.example Access denied", 1]
    hours = r["hours"].values()
    assert sum(h.get("received", 0) for h in hours) == 4
    assert sum(h.get("bytes", 0) for h in hours) == sum(sizes)
    assert sum(h.get("refused", 0) for h in hours) == 3

    text = app.cli("report", "--log", str(log_file)).stdout
    assert f"{4:>10}  messages received" in text and f"{sum(sizes):>10}  bytes received" in text
    assert f"{3:>10}  {sum(sizes[:3]):>12}  <a@example.org>" in text
    assert f"{1:>10}  554 5.7.1 mx.test.example Access denied" in text

    # lines older than --since are left out
    old = time.time() - 2 * 86400
    line = (json.dumps({"time": old, "level": "info", "event": "queued", "size": 10,
                        "mail_from": "<old@example.org>", "rcpt_to": "<b@example.net>",
                        "client": "unknown[192.0.2.1]"}) if fmt == "json" else
            time.strftime("%Y-%m-%d %H:%M:%S,000", time.localtime(old)) +
            " info queued session=S queue_id=Q client=unknown[192.0.2.1] helo=h "
            "mail_from=<old@example.org> rcpt_to=<b@example.net> size=10 tls=none")
    older = tmp_path / "older.log"
    older.write_text(line + "\n")
    day = json.loads(app.cli("report", "--log", str(older), "--log", str(log_file),
                             "--json").stdout)
    assert day["received"] == 4
    week = json.loads(app.cli("report", "--since", "3d", "--log", str(older), "--log",
                              str(log_file), "--json").stdout)
    assert week["received"] == 5 and week["bytes"] == sum(sizes) + 10
    assert ["unknown[192.0.2.1]", 1] in week["clients"]


def test_report_reads_the_configured_file_and_says_when_there_is_none(make_appliance, tmp_path):
    app = make_appliance(start=False)
    got = app.cli("report")
    assert got.returncode == 1 and "--log FILE" in got.stderr
    bad = app.cli("report", "--since", "yesterday", "--log", "/dev/null")
    assert bad.returncode == 2 and "--since" in bad.stderr
