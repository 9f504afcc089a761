"""The Prometheus endpoint, ``stats``, ``status`` and ``reload`` against the real
server with two workers: counts scraped over HTTP are exact and add up across
processes (both workers are killed half-way, so half of each count was made by
processes that no longer run), and the control socket answers."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from appliance.metrics import RUN_PREFIX, run_base
from tests.peers import free_port, wait_for

from .test_receive import MSG


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(found, name: str, **labels: str) -> float:
    return sum(v for ls, v in found.get(f"smtp_appliance_{name}", [])
               if labels.items() <= ls.items())


def workers_of(app) -> list[int]:
    pid = app.proc.pid
    return [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]


def send(app, count: int) -> None:
    for _ in range(count):
        with smtplib.SMTP("127.0.0.1", app.port, timeout=10) as c:
            assert c.sendmail("a@example.org", ["b@example.net", "c@example.net"], MSG) == {}


@pytest.fixture
def served(make_appliance):
    port = free_port("127.0.0.1")
    app = make_appliance(f"""
        [server]
        workers = 2
        [metrics]
        listen = "127.0.0.1:{port}"
        [access]
        deny = ["127.0.0.2"]
        """)
    wait_for(lambda: len(workers_of(app)) == 2)
    return app, port


def settled(port: int) -> float:
    """The sessions so far, once every one has ended (the fixture's readiness
    probes are sessions too)."""
    return wait_for(lambda: (f := scrape(port)) and value(f, "sessions_open") == 0
                    and value(f, "session_seconds_count") == value(f, "connections_total")
                    and value(f, "connections_total"))


def test_counts_add_up_across_workers_dead_and_alive(served):
    app, port = served
    probes = settled(port)
    send(app, 2)
    with pytest.raises(smtplib.SMTPConnectError) as refused:  # access: 554 at connect
        smtplib.SMTP("127.0.0.1", app.port, timeout=10, source_address=("127.0.0.2", 0))
    assert refused.value.smtp_code == 554
    with smtplib.SMTP("127.0.0.1", app.port, timeout=10) as c:
        c.ehlo("client.example")
        assert c.docmd("MAIL FROM:<not an address")[0] == 501  # the server's own refusal
    assert settled(port) == probes + 4  # every session ended: its disconnect counted
    first = workers_of(app)
    for pid in first:  # every count so far was made by these two processes
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: len(workers_of(app)) == 2 and not set(workers_of(app)) & set(first))
    send(app, 3)
    assert settled(port) == probes + 7
    found = scrape(port)
    sizes = sum(json.loads(p.read_text())["size"] for p in app.queued())
    assert len(app.queued()) == 5
    assert value(found, "connections_total", listener="mta", outcome="accepted") == probes + 7
    assert value(found, "sessions_open") == 0
    assert value(found, "messages_accepted_total") == 5
    assert value(found, "recipients_accepted_total") == 10
    assert value(found, "message_bytes_total") == sizes
    assert value(found, "refusals_total") == 2
    assert value(found, "refusals_total", command="CONNECT", code="554", enhanced="5.7.1",
                 plugin="access") == 1
    assert value(found, "refusals_total", command="MAIL", code="501", plugin="") == 1
    assert value(found, "queue_commit_seconds_count") == 5
    assert value(found, "queue_messages") == 5
    assert value(found, "queue_oldest_seconds") > 0
    # the same numbers from the control socket
    stats = app.cli("stats")
    assert stats.returncode == 0, stats.stderr
    lines = {" ".join(line.split()[:-1]): line.split()[-1] for line in stats.stdout.splitlines()
             if not line.startswith("--")}
    assert lines["messages accepted"] == "5" and lines["bytes accepted"] == str(sizes)
    assert lines["connections mta accepted"] == str(int(probes) + 7)
    assert lines["refused CONNECT 554 5.7.1 access"] == "1"
    assert lines["queue messages"] == "5"
    # --watch: the table again and again, with each line's rate since the last
    watch = subprocess.Popen(
        [sys.executable, "-m", "appliance", "stats", "--watch", "0.5",
         "--config-dir", str(app.config_dir)], stdout=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in watch.stdout:
            seen.append(line)
            if (sum(s.startswith("-- uptime") for s in seen) == 2
                    and line.startswith("messages accepted")):
                break
    finally:
        watch.kill()
        watch.wait()
    second = seen[[i for i, s in enumerate(seen) if s.startswith("-- uptime")][1]:]
    assert any(s.split()[:2] == ["messages", "accepted"] and s.rstrip().endswith("0.00/s")
               for s in second), seen


def test_status_and_reload_over_the_control_socket(served):
    app, port = served
    assert f"metrics: http://127.0.0.1:{port}/metrics" in app.cli("check-config").stdout
    status = app.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    got = json.loads(status.stdout)
    assert got["pid"] == app.proc.pid and sorted(got["workers"]) == sorted(workers_of(app))
    assert got["listeners"] == {"mta": f"[127.0.0.1]:{app.port} tls none"}
    assert got["config_dir"] == str(app.config_dir.resolve()) and got["sessions"] == 0
    text = app.cli("status").stdout
    assert f"pid:        {app.proc.pid}" in text and "mta" in text

    (app.config_dir / "60-limits.toml").write_text("[limits]\nmax_recipients = 1\n")
    reload = app.cli("reload")
    assert reload.returncode == 0 and reload.stdout.startswith("reloaded "), reload.stderr
    wait_for(lambda: app.log().count("info reloaded ") == 2)  # each worker logs its own
    for _ in range(2):  # whichever worker serves, the new limit is in force
        with smtplib.SMTP("127.0.0.1", app.port, timeout=10) as c:
            refused = c.sendmail("a@example.org", ["b@example.net", "c@example.net"], MSG)
            assert list(refused) == ["c@example.net"]
    # a broken configuration is refused, and says why; the server goes on as it was
    (app.config_dir / "70-broken.toml").write_text("[limits]\nmax_recipients = 0\n")
    refused = app.cli("reload")
    assert refused.returncode == 1
    assert "reload refused, the running configuration stays" in refused.stderr
    assert "70-broken.toml: limits.max_recipients" in refused.stderr
    assert "reload_refused" in app.log()
    with smtplib.SMTP("127.0.0.1", app.port, timeout=10) as c:
        assert list(c.sendmail("a@example.org", ["b@example.net", "c@example.net"], MSG)) == \
            ["c@example.net"]
    assert len(app.queued()) == 3
    # the run's metrics directory is in memory, and gone once the server is
    run_dir = run_base() / f"{RUN_PREFIX}{app.proc.pid}"
    assert any(run_dir.glob("counter_*.db"))
    assert app.stop() == 0
    assert not run_dir.exists()


def test_no_server_no_answer(make_appliance):
    app = make_appliance(start=False)
    got = app.cli("stats")
    assert got.returncode == 1 and "cannot be reached" in got.stderr
    assert "state.sock" in got.stderr


def test_a_metrics_port_already_taken_names_the_key(make_appliance):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        app = make_appliance(f'[metrics]\nlisten = "127.0.0.1:{port}"\n', start=False)
        app.start(wait=False)
        assert app.proc.wait(20) == 1
    finally:
        taken.close()
    assert f"metrics.listen 127.0.0.1:{port}: Address already in use" in app.log()
