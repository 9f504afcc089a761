"""The cost of admin-written rules ([[rules]], docs/rules.md).

Two measurements:

* ``python bench/rules.py micro [--messages N]``: the µs of rule evaluation per
  message, in process: 200 rules of a realistic mix (most not matching, a few
  calling header methods) compiled as the server does, run at every event of a
  message (connect, ehlo, mail_from, one rcpt_to, headers_received, message) on
  real contexts.
* ``python bench/rules.py s1 [bench/run.py options]``: S1 (bench/README.md) with
  those 200 rules loaded and with none, in the same run, through ``bench/run.py``
  (``--appliance-config``); it prints both tables and the difference in messages
  per second.

``python bench/rules.py write FILE`` writes the 200 rules as a conf.d file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EVENTS = ("connect", "ehlo", "mail_from", "rcpt_to", "headers_received", "message")


def rules_toml(count: int = 200) -> str:
    """``count`` rules: per 20, 15 that do not match the bench's traffic (from
    127.0.0.1, sender@bench.example to rcpt@bench.example), 3 that match and set a
    variable or add a header, 2 in monitor mode."""
    out = ["# 200 rules for bench/rules.py: most do not match the bench traffic\n"]

    def rule(name: str, event: str, condition: str, actions: str, extra: str = "") -> None:
        out.append(f'[[rules]]\nname = "{name}"\nevent = "{event}"\n'
                   f"condition = '{condition}'\nactions = [{actions}]\n{extra}\n")

    for i in range(count // 20):
        reject = '{ action = "reject", text = "refused by rule" }'
        rule(f"net-{i}", "connect", f'remote_ip in ["192.0.{i}.0/24", "198.51.100.{i}"]',
             reject)
        rule(f"helo-{i}", "ehlo", f'helo_name like "*.dyn{i}.example"', reject)
        rule(f"helo-re-{i}", "ehlo", f'helo_name matches "^mail{i}[0-9]+\\\\."', reject)
        rule(f"sender-{i}", "mail_from", f'mail_from_domain in ["spam{i}.example", '
             f'"*.bulk{i}.example"]', reject)
        rule(f"sender-re-{i}", "mail_from", f'mail_from matches "^bounce-{i}-"', reject)
        rule(f"size-{i}", "mail_from", f"mail_from_size > {50_000_000 + i}", reject)
        rule(f"rcpt-{i}", "rcpt_to", f'rcpt_domain == "closed{i}.example"', reject)
        rule(f"rcpt-tls-{i}", "rcpt_to", f'not tls and rcpt_domain == "secure{i}.example"',
             reject)
        rule(f"rcpt-count-{i}", "rcpt_to", f"rcpt_count > {500 + i}", reject)
        rule(f"auth-{i}", "rcpt_to", f'auth_user == "blocked{i}"', reject)
        rule(f"subject-{i}", "headers_received",
             f'contains(header("Subject"), "viagra{i}")', reject)
        rule(f"spam-flag-{i}", "headers_received",
             f'has_header("X-Spam-{i}") and header("X-Spam-{i}") == "YES"', reject)
        rule(f"received-{i}", "headers_received", f'header_count("Received") > {40 + i}',
             reject)
        rule(f"msg-{i}", "message", f'header("From") like "*@phish{i}.example"', reject)
        rule(f"geo-{i}", "connect", f'geoip_country in ["X{i % 10}", "Y{i % 10}"]', reject)
        rule(f"tag-{i}", "headers_received", "not tls",
             f'{{ method = "add_header", name = "X-Rule-{i}", value = "#remote_ip#" }}')
        rule(f"folder-{i}", "rcpt_to", f'rcpt_domain == "bench.example" and {i} >= 0',
             '{ set = "rcpt_folder", value = "INBOX" }')
        rule(f"mark-{i}", "mail_from", 'mail_from_domain == "bench.example"',
             '{ set = "max_recipients", value = 100 }')
        rule(f"watch-{i}", "rcpt_to", f'rcpt_local_part == "watched{i}"', reject,
             'mode = "monitor"')
        rule(f"watch-msg-{i}", "message", f'header("Subject") == "watch {i}"', reject,
             'mode = "monitor"')
    return "".join(out)


def micro(messages: int) -> dict:
    from appliance_plugins.rules import state_of
    from appliance_plugins.rules.engine import compile_rules, evaluate
    from appliance_plugins.rules.variables import Env

    from appliance.config import ConfigError, load_config
    from appliance.hooks.host import discover, loader_inputs
    from appliance.mail.context import Recipient, SessionContext, Transaction
    from appliance.mail.headers import Headers

    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp)
        (conf / "00.toml").write_text('[listeners.mta]\nport = 2525\n' + rules_toml())
        try:
            config = load_config(conf, **loader_inputs(discover()))
        except ConfigError as exc:
            sys.exit(f"the bench rules do not load: {exc}")
    rules = compile_rules(config.areas["rules"])
    count = sum(len(v) for v in rules.values())
    elapsed = 0.0
    for n in range(messages):
        session = SessionContext(session_id=str(n), listener="mta", local_ip="127.0.0.1",
                                 local_port=25, remote_ip="127.0.0.1", remote_port=40000)
        tx = Transaction(queue_id=str(n), mail_from="sender@bench.example",
                         mail_params={"SIZE": 10240})
        rcpt = Recipient("rcpt@bench.example")
        headers = Headers([("Received", "from bench"), ("From", "sender@bench.example"),
                           ("To", "rcpt@bench.example"), ("Subject", "bench S1")])
        state = state_of(session)
        for event in EVENTS:
            env = Env(event, session, state, transaction=tx if event in EVENTS[2:] else None,
                      recipient=rcpt if event == "rcpt_to" else None,
                      headers=headers if event in EVENTS[4:] else None,
                      hostname="bench.localhost", extended=True)
            started = time.process_time()
            evaluate(rules[event], env)
            elapsed += time.process_time() - started
    return {"rules": count, "messages": messages,
            "us_per_message": round(elapsed / messages * 1e6, 1)}


def s1(passthrough: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "60-bench-rules.toml"
        config.write_text(rules_toml())
        base = [sys.executable, str(HERE / "run.py"), "--scenarios", "S1",
                "--only", "appliance", *passthrough]
        results: dict[str, dict] = {}
        for label, extra in (("no rules", []), ("200 rules", ["--appliance-config",
                                                               str(config)])):
            print(f"== S1, {label}", flush=True)
            done = subprocess.run([*base, *extra])
            if done.returncode != 0:
                return done.returncode
            latest = json.loads((HERE / "results" / "latest.json").read_text())
            results[label] = latest["results"]["appliance"]["S1"]
    base, ruled = results["no rules"], results["200 rules"]
    for label, found in results.items():
        print(f"S1 {label:<10} {found['msgs_per_s']:>8.1f} msg/s "
              f"{found['cpu_s_per_1000']:>6.2f} CPU s per 1000 messages")
    change = (ruled["msgs_per_s"] / base["msgs_per_s"] - 1) * 100
    print(f"200 rules: {change:+.1f} % messages per second")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("micro", help="µs of rule evaluation per message")
    m.add_argument("--messages", type=int, default=2000)
    sub.add_parser("s1", help="S1 with 200 rules and without (bench/run.py options follow)")
    w = sub.add_parser("write", help="write the 200 rules to FILE")
    w.add_argument("file", type=Path)
    args, rest = p.parse_known_args()
    if args.command == "micro":
        print(json.dumps(micro(args.messages)))
        return 0
    if args.command == "write":
        args.file.write_text(rules_toml())
        return 0
    return s1(rest)


if __name__ == "__main__":
    sys.exit(main())
