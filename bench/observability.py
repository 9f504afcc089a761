"""Cost per message of the metrics and of the log lines: µs of CPU per message.

Replays the events one accepted message's session emits (connect, tls, auth, mail,
queued, disconnect: what ``appliance.logs`` sees for one message over STARTTLS and
AUTH) through ``appliance.logs`` in four set-ups, and reports the CPU time per
message of each:

* ``nothing``: no output, no observer (the floor: building the events' fields);
* ``metrics``: the metrics observer only, in prometheus-client's multiprocess mode
  (memory-mapped files in a temporary directory), as the server runs it;
* ``log``: text lines to a file at level info, no metrics;
* ``both``: the server's default set-up with a log file.

Each figure is the median of ``--runs`` runs of ``--messages`` messages, in CPU
seconds of this process. Standard library, prometheus-client and the appliance:

    .venv/bin/python bench/observability.py                      # 20,000 messages, 5 runs
    .venv/bin/python bench/observability.py --messages 1000 --runs 1
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance import logs, metrics  # noqa: E402
from appliance.config.schema import Logging  # noqa: E402
from appliance.config.units import FilePath, LogOutputs  # noqa: E402


def one_message(i: int) -> None:
    log = logs.SessionLog(f"S{i:020d}")
    log.listener = "mta"
    log.event("connect", listener="mta", client="[192.0.2.7]:40000", server="[192.0.2.1]:25")
    log.event("tls", protocol="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384")
    log.event("auth", user="alice", mechanism="PLAIN")
    log.event("mail", logging.DEBUG, queue_id=f"Q{i:019d}", mail_from="<a@example.org>")
    log.event("queued", queue_id=f"Q{i:019d}", client="unknown[192.0.2.7]", helo="c.example",
              mail_from="<a@example.org>", rcpt_to="<b@example.net>,<c@example.net>",
              size=2817, tls="TLSv1.3", seconds=0.004, checks="spf:pass", rcpts=2, by="spool")
    log.event("disconnect", messages=1, bytes=2817, bad_commands=0, bad_recipients=0,
              seconds=0.05, listener="mta", checks="reverse-dns:pass")


def run(messages: int) -> float:
    started = time.process_time()
    for i in range(messages):
        one_message(i)
    return time.process_time() - started


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        file_config = Logging(destination=LogOutputs("file"),
                              file=FilePath(str(work_dir / "mail.log")))
        (work_dir / "metrics").mkdir()
        measured = metrics.Metrics(str(work_dir / "metrics"))
        print(f"{args.messages} messages, median of {args.runs} runs, CPU µs per message")
        for name, outputs, observer in (("nothing", False, False), ("metrics", False, True),
                                        ("log", True, False), ("both", True, True)):
            logs.forget_observers()
            if observer:
                logs.observe(measured.observe)
            if outputs:
                logs.setup(file_config)
            else:
                logs.log.handlers[:] = []
                logs.configure(Logging(classes=file_config.classes, level="error"))
            run(min(args.messages, 1000))  # warm-up
            times = [run(args.messages) for _ in range(args.runs)]
            print(f"  {name:<8} {statistics.median(times) / args.messages * 1e6:8.1f}")
        logs.forget_observers()
    return 0


if __name__ == "__main__":
    sys.exit(main())
