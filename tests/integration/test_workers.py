"""Pre-forked workers under supervision: a worker the supervisor respawns after a
crash serves, reloads and drains like the ones it started with."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

from tests.peers import wait_for

from .conftest import read_reply
from .test_receive import connect, talk


def workers(app) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(app.proc.pid)], capture_output=True, text=True)
    return {int(pid) for pid in out.stdout.split()}


def worker_of(app, client: socket.socket, pids: set[int]) -> int:
    """The worker process that holds the server side of ``client``'s connection."""
    ports = f"{app.port:04X}", f"{client.getsockname()[1]:04X}"
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    inodes = [f"socket:[{row[9]}]" for row in rows
              if (row[1].partition(":")[2], row[2].partition(":")[2]) == ports]
    assert inodes, f"no server socket for {client.getsockname()}"
    inode = inodes[0]
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd") if os.path.exists(f"/proc/{pid}") else ():
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == inode:
                    return pid
            except OSError:
                continue
    raise AssertionError(f"no worker of {pids} holds {inode}")


def test_a_respawned_worker_gets_the_current_config_reloads_and_drains(make_appliance):
    app = make_appliance("[server]\nworkers = 2\n")
    first = wait_for(lambda: len(workers(app)) == 2 and workers(app), "two workers", 15)
    killed = min(first)
    os.kill(killed, signal.SIGKILL)
    current = wait_for(lambda: (w := workers(app)) - first and len(w) == 2 and w,
                       "the killed worker's replacement")
    respawned = (current - first).pop()
    assert "worker_died" in app.log()

    (app.config_dir / "50-extra.toml").write_text(
        '[server]\nworkers = 2\nbanner = "#HostName# reloaded"\n')
    app.signal(signal.SIGHUP)
    # Each worker, the respawned one included, switches to the new banner for good.
    switched: set[int] = set()

    def greet_until_both_switched():
        assert workers(app) == current, f"a worker died on SIGHUP:\n{app.log()[-1500:]}"
        s = connect_raw(app)
        banner = read_reply(s)
        pid = worker_of(app, s, current)
        s.close()
        if banner == b"220 mx.test.example reloaded\r\n":
            switched.add(pid)
        else:
            assert pid not in switched, f"worker {pid} greeted with the old banner again"
        return switched == current

    wait_for(greet_until_both_switched, f"new banner from both workers {current}")
    for _ in range(40):
        s = connect_raw(app)
        assert read_reply(s) == b"220 mx.test.example reloaded\r\n"
        s.close()

    # A worker respawned after the reload starts with the reloaded configuration.
    os.kill(respawned, signal.SIGKILL)
    after = wait_for(lambda: (w := workers(app)) - current and len(w) == 2 and w,
                     "the second replacement")
    respawned = (after - current).pop()

    def greeted_by_respawned():
        s = connect_raw(app)
        banner = read_reply(s)
        pid = worker_of(app, s, after)
        s.close()
        assert banner == b"220 mx.test.example reloaded\r\n", (pid, respawned, banner)
        return pid == respawned

    wait_for(greeted_by_respawned, "a greeting from the worker respawned after the reload")
    current = after

    # SIGTERM while the respawned worker has a session in DATA: its 250 arrives.
    in_data: list[tuple[socket.socket, int]] = []

    def open_data_session_on_respawned():
        s = connect(app)
        talk(s, b"EHLO busy.example\r\nMAIL FROM:<a@example.org>\r\n")
        talk(s, b"RCPT TO:<b@example.net>\r\n")
        assert talk(s, b"DATA\r\n").startswith(b"354")
        s.sendall(b"Subject: in flight\r\n\r\nfirst half\r\n")
        in_data.append((s, worker_of(app, s, current)))
        return in_data[-1][1] == respawned

    wait_for(open_data_session_on_respawned, "a DATA session on the respawned worker")
    time.sleep(0.3)
    app.signal(signal.SIGTERM)
    time.sleep(0.3)
    for s, pid in in_data:
        s.sendall(b"second half\r\n.\r\n")
        rest = b""
        while chunk := s.recv(65536):
            rest += chunk
        assert rest.startswith(b"250 2.0.0 Ok: queued as"), (pid, respawned, rest)
    assert app.proc.wait(20) == 0
    assert len(app.queued()) == len(in_data)


def connect_raw(app) -> socket.socket:
    return socket.create_connection(("127.0.0.1", app.port), timeout=10)
