#!/usr/bin/env python3
"""Benchmark smtp-appliance against a private Postfix instance (see bench/README.md).

    .venv/bin/python bench/run.py [--scenarios S1,S2,S3,S4] [--runs 3]
                                  [--only appliance|postfix] [--workers N] [--quick]
                                  [--opendkim]

Standard library only. Traffic goes to 127.0.0.1 only. Writes bench/results/latest.json
(and a timestamped copy) and prints a table. Exits 1 if any scenario FAILED.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from idle import run_idle
from opendkim import PrivateOpenDKIM, first_message_signed
from procstat import kernel_threads_cpu, system_busy_cpu, tree_cpu, tree_memory
from targets import ApplianceTarget, PostfixTarget, TargetError

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
SMTP_SOURCE = "/usr/sbin/smtp-source"
KIB, MIB = 1024, 1024 * 1024


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    size: int = 0  # message body bytes (smtp-source -l)
    sessions: int = 0  # parallel sessions (smtp-source -s)
    messages: int = 0  # total messages (smtp-source -m)
    persistent: bool = True  # smtp-source -d: many messages per connection
    idle: int = 0  # S4: idle sessions to hold

    def scaled(self, factor: int) -> Scenario:
        if factor == 1:
            return self
        return Scenario(
            self.name,
            self.title,
            self.size,
            self.sessions,
            max(1, self.messages // factor) if self.messages else 0,
            self.persistent,
            max(1, self.idle // factor) if self.idle else 0,
        )


SCENARIOS = {
    "S1": Scenario("S1", "10 KiB, 50 sessions, persistent", 10 * KIB, 50, 20000, True),
    "S2": Scenario("S2", "10 KiB, 50 sessions, 1 msg/connection", 10 * KIB, 50, 20000, False),
    "S3": Scenario("S3", "1 MiB, 10 sessions, persistent", MIB, 10, 500, True),
    "S4": Scenario("S4", "idle sessions held open", idle=5000),
}
WARMUP = Scenario("warmup", "warm-up", 10 * KIB, 10, 200, True)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- running


def smtp_source(port: int, sc: Scenario, workdir: Path, timeout: float) -> dict:
    """Run smtp-source once; return wall time, exit status and messages it completed."""
    cmd = [SMTP_SOURCE, "-4", "-c"]
    cmd += ["-s", str(sc.sessions), "-m", str(sc.messages), "-l", str(sc.size)]
    cmd += ["-M", "bench.localhost", "-f", "sender@bench.example", "-t", "rcpt@bench.example"]
    cmd += ["-S", f"bench {sc.name}"]
    if sc.persistent:
        cmd.append("-d")  # don't disconnect after each message
    cmd.append(f"127.0.0.1:{port}")
    out_path = workdir / "smtp-source.out"
    with open(out_path, "w+b") as out:
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(cmd, stdout=out, stderr=out, timeout=timeout).returncode
            timed_out = False
        except subprocess.TimeoutExpired:  # run() has killed it
            rc, timed_out = -1, True
        wall = time.perf_counter() - t0
        out.seek(0)
        output = out.read().decode(errors="replace")
    # -c prints a running count of completed DATA commands, separated by \r.
    counts = [int(x) for x in re.findall(r"(?<![^\r\n])(\d+)(?=\r|\n|$)", output)]
    errors = [ln for ln in output.replace("\r", "\n").splitlines() if "smtp-source:" in ln]
    return {
        "command": " ".join(cmd),
        "wall_s": wall,
        "exit": rc,
        "timed_out": timed_out,
        "completed": max(counts) if counts else 0,
        "errors": errors[:5],
    }


def run_once(target, sc: Scenario, workdir: Path, timeout: float) -> dict:
    target.reset()
    target.settle()
    os.sync()  # the previous run's dirty pages are written back now, not during this run
    accepted_before = target.accepted()
    delivered_before = target.delivered() if hasattr(target, "delivered") else None
    kthreads_before = kernel_threads_cpu()
    client_before = _children_cpu()
    busy_before = system_busy_cpu()
    cpu_before = tree_cpu(target.root_pid)
    res = smtp_source(target.port, sc, workdir, timeout)
    problems = []
    try:
        target.settle()
    except TargetError as exc:
        problems.append(str(exc))
    cpu = tree_cpu(target.root_pid) - cpu_before
    busy = system_busy_cpu() - busy_before
    client = _children_cpu() - client_before
    kthreads = kernel_threads_cpu() - kthreads_before
    if res["timed_out"]:
        problems.append(f"smtp-source timed out after {timeout:.0f}s")
    elif res["exit"] != 0:
        problems.append(f"smtp-source exited {res['exit']}: {'; '.join(res['errors'])}")
    if res["completed"] != sc.messages:
        problems.append(f"smtp-source completed {res['completed']} of {sc.messages} messages")
    run = {
        "wall_s": round(res["wall_s"], 3),
        "msgs_per_s": round(sc.messages / res["wall_s"], 1),
        "cpu_s": round(cpu, 2),
        "cpu_s_per_1000": round(cpu * 1000 / sc.messages, 3),
        "smtp_source_exit": res["exit"],
        # Not in cpu_s, for judging it: the load generator, kernel threads (writeback
        # caused by fsync), and whatever else ran (other users: a noisy machine).
        "smtp_source_cpu_s": round(client, 2),
        "kernel_threads_cpu_s": round(kthreads, 2),
        "other_cpu_s": round(busy - cpu - client - kthreads, 2),
        "loadavg_before": _loadavg(),
        "server_rss_mib_after": tree_memory(target.root_pid).as_dict()["rss_mib"],
    }
    if accepted_before is not None:
        got = target.accepted() - accepted_before
        run["spooled"] = got
        if got != sc.messages:
            problems.append(f"spool holds {got} new messages, expected {sc.messages}")
    if delivered_before is not None:
        # Informative only: postlogd may lag behind or drop lines under load.
        run["maillog_delivered"] = target.delivered() - delivered_before
    run["ok"] = not problems
    if problems:
        run["problems"] = problems
    return run


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _loadavg() -> float | None:
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError):
        return None


def summarize(runs: list[dict]) -> dict:
    good = [r for r in runs if r["ok"]]
    out = {"ok": len(good) == len(runs) and bool(runs), "runs": runs}
    if good:
        for key in ("msgs_per_s", "cpu_s_per_1000", "wall_s"):
            out[key] = round(statistics.median(r[key] for r in good), 3)
    return out


def summarize_idle(runs: list[dict]) -> dict:
    out = {"ok": all(r["ok"] for r in runs) and bool(runs), "runs": runs}
    if runs:
        out["rss_mib"] = statistics.median(r["memory_during"]["rss_mib"] for r in runs)
        out["pss_mib"] = statistics.median(r["memory_during"]["pss_mib"] for r in runs)
        out["processes"] = statistics.median(r["memory_during"]["processes"] for r in runs)
        lat = [r["banner_latency_s"]["max"] for r in runs if r["banner_latency_s"]["max"]]
        out["banner_latency_max_s"] = round(statistics.median(lat), 4) if lat else None
        out["sessions_held"] = min(r["sessions_held"] for r in runs)
    return out


# ----------------------------------------------------------------------------- report


def fmt(v, spec: str = ".0f") -> str:
    return "-" if v is None else format(v, spec)


def table(
    results: dict, names: list[str], scenarios: dict[str, Scenario], quick: bool = False
) -> str:
    rows = []
    head = (
        f"{'scenario':<44} {'appliance msg/s':>15} {'postfix msg/s':>13} {'ratio':>6} "
        f"{'appl CPU s/1k':>13} {'pfx CPU s/1k':>12}"
    )
    rows += [head, "-" * len(head)]
    if quick:
        rows.insert(0, "QUICK MODE: messages and idle sessions / 10")
    for name in names:
        sc = scenarios[name]
        if sc.idle:
            continue
        a = results.get("appliance", {}).get(name)
        p = results.get("postfix", {}).get(name)
        am = a.get("msgs_per_s") if a else None
        pm = p.get("msgs_per_s") if p else None
        ratio = am / pm if am and pm else None
        flag = " FAILED" if any(x is not None and not x["ok"] for x in (a, p)) else ""
        rows.append(
            f"{name + ' ' + sc.title:<44} {fmt(am):>15} {fmt(pm):>13} {fmt(ratio, '.2f'):>6} "
            f"{fmt(a and a.get('cpu_s_per_1000'), '.2f'):>13} "
            f"{fmt(p and p.get('cpu_s_per_1000'), '.2f'):>12}{flag}"
        )
    for name in names:
        sc = scenarios[name]
        if not sc.idle:
            continue
        rows.append("")
        rows.append(f"{name}: {sc.idle} idle sessions held")
        for tname in ("appliance", "postfix"):
            r = results.get(tname, {}).get(name)
            if not r:
                continue
            status = "ok" if r["ok"] else "FAILED"
            rows.append(
                f"  {tname:<10} held {r.get('sessions_held', 0)}/{sc.idle}  "
                f"RSS {fmt(r.get('rss_mib'), '.1f')} MiB  PSS {fmt(r.get('pss_mib'), '.1f')} MiB  "
                f"({fmt(r.get('processes'))} processes)  "
                f"new-client banner {fmt(r.get('banner_latency_max_s'), '.4f')} s  {status}"
            )
    return "\n".join(rows)


# ----------------------------------------------------------------------------- main


def raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, PermissionError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scenarios", default="S1,S2,S3,S4", help="comma-separated, e.g. S1,S3")
    p.add_argument("--runs", type=int, default=3, help="runs per scenario; the median is reported")
    p.add_argument("--only", choices=["appliance", "postfix"], help="benchmark one server only")
    p.add_argument("--workers", type=int, default=0,
                   help="appliance [server] workers (default 0: one per CPU, as conf.d ships)")
    p.add_argument("--quick", action="store_true", help="messages and idle sessions / 10")
    p.add_argument("--timeout", type=float, default=600, help="seconds per scenario run")
    p.add_argument(
        "--appliance-config",
        action="append",
        type=Path,
        default=[],
        metavar="TOML",
        help="extra config file for the appliance (copied after the bench's own)",
    )
    p.add_argument(
        "--access-entries",
        type=int,
        default=0,
        metavar="N",
        help="give the appliance an [access] deny_file of N random entries (loopback left out)",
    )
    p.add_argument(
        "--appliance-bin",
        type=Path,
        default=REPO / ".venv" / "bin" / "smtp-appliance",
        help="the smtp-appliance executable",
    )
    p.add_argument(
        "--opendkim",
        action="store_true",
        help="put a private opendkim (signing) in front of the appliance as a milter",
    )
    p.add_argument("--no-warmup", action="store_true", help="skip the warm-up run per server")
    p.add_argument("--keep", action="store_true", help="keep the work dir (configs, spools, logs)")
    args = p.parse_args(argv)
    names = [s.strip().upper() for s in args.scenarios.split(",") if s.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        p.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    if args.runs < 1:
        p.error("--runs must be at least 1")
    args.names = names
    return args


def _terminate(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    factor = 10 if args.quick else 1
    scenarios = {n: SCENARIOS[n].scaled(factor) for n in args.names}
    if args.opendkim:  # reported under its own title, next to the same scenario without
        scenarios = {n: dataclasses.replace(sc, title=f"{sc.title}, opendkim milter")
                     for n, sc in scenarios.items()}
    idle_max = max((sc.idle for sc in scenarios.values()), default=0)
    # Inherited by the servers we start (appliance, Postfix master and its smtpd).
    nofile = raise_nofile(max(65536, 2 * idle_max + 4096))
    if nofile < idle_max + 256:
        print(f"RLIMIT_NOFILE is {nofile}: too low for {idle_max} idle sessions", file=sys.stderr)
        return 2
    if not Path(SMTP_SOURCE).exists() and any(not sc.idle for sc in scenarios.values()):
        print(f"{SMTP_SOURCE} not found: run `make deps-system`", file=sys.stderr)
        return 2

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = RESULTS / f"work-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    targets = []
    milter = PrivateOpenDKIM(workdir) if args.opendkim else None
    if milter is not None:
        if args.only == "postfix":
            print("--opendkim applies to the appliance only", file=sys.stderr)
            return 2
        try:
            milter.start()
        except (TargetError, OSError, subprocess.SubprocessError) as exc:
            print(f"opendkim: could not start: {exc}", file=sys.stderr)
            return 2
        log(f"opendkim signing {milter.port} for the appliance")
    if args.only in (None, "appliance"):
        targets.append(
            ApplianceTarget(
                workdir,
                args.appliance_bin,
                workers=args.workers,
                max_sessions=max(10000, 2 * idle_max),
                extra_config=[*args.appliance_config,
                              *access_list_config(workdir, args.access_entries),
                              *([milter.appliance_config()] if milter else [])],
            )
        )
    if args.only in (None, "postfix"):
        targets.append(PostfixTarget(workdir, smtpd_maxproc=idle_max + 100 if idle_max else None))

    report: dict = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["bench/run.py", *(sys.argv[1:] if argv is None else argv)]),
        "host": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "postfix": _postfix_version(),
            "git": _git_describe(),
            "nofile": nofile,
        },
        "options": {
            "runs": args.runs,
            "quick": args.quick,
            "workers": args.workers,
            "timeout_s": args.timeout,
            "opendkim": args.opendkim,
        },
        "scenarios": {n: vars(sc) for n, sc in scenarios.items()},
        "results": {},
        "errors": {},
    }
    results: dict = report["results"]
    live = []
    failed = False
    try:
        for t in targets:
            log(f"starting {t.name}")
            try:
                t.start()
            except (TargetError, OSError, subprocess.SubprocessError) as exc:
                log(f"{t.name}: could not start: {exc}")
                report["errors"][t.name] = str(exc)
                failed = True
                continue
            log(f"{t.name} listening on 127.0.0.1:{t.port} (pid {t.root_pid})")
            live.append(t)
            if not args.no_warmup and any(not sc.idle for sc in scenarios.values()):
                w = run_once(t, WARMUP, workdir, args.timeout)
                log(f"{t.name} warm-up: {w['msgs_per_s']} msg/s{'' if w['ok'] else ' FAILED'}")
                if not w["ok"]:
                    log(f"  {w.get('problems')}\n{t.log_tail()}")
        # Runs interleave the servers (A, P, A, P, ...) so drift hits both alike.
        for name, sc in scenarios.items():
            per_target: dict[str, list[dict]] = {t.name: [] for t in live}
            for i in range(args.runs):
                for t in live:
                    label = f"{name} run {i + 1}/{args.runs} {t.name}"
                    if sc.idle:
                        r = run_idle(t.port, sc.idle, t.root_pid, timeout=min(args.timeout, 300))
                        log(
                            f"{label}: held {r['sessions_held']}/{sc.idle} in {r['setup_s']}s, "
                            f"RSS {r['memory_during']['rss_mib']} MiB, "
                            f"banner {r['banner_latency_s']['max']} s"
                            + ("" if r["ok"] else f" FAILED {r['errors']} {r['probe_errors']}")
                        )
                    else:
                        r = run_once(t, sc, workdir, args.timeout)
                        if milter is not None and isinstance(t, ApplianceTarget) and not (
                                first_message_signed(t.queue_dir())):
                            r["ok"] = False
                            r.setdefault("problems", []).append("messages not DKIM-signed")
                        log(
                            f"{label}: {r['msgs_per_s']} msg/s, {r['wall_s']} s, "
                            f"CPU {r['cpu_s']} s ({r['cpu_s_per_1000']} s/1000)"
                            + ("" if r["ok"] else f" FAILED: {'; '.join(r['problems'])}")
                        )
                    if not r["ok"]:
                        log(f"  last log lines of {t.name}:\n{t.log_tail() or '(empty)'}")
                    per_target[t.name].append(r)
            for tname, runs in per_target.items():
                summary = summarize_idle(runs) if sc.idle else summarize(runs)
                results.setdefault(tname, {})[name] = summary
                failed |= not summary["ok"]
    except KeyboardInterrupt:
        log("interrupted")
        failed = True
        report["errors"]["interrupted"] = True
    finally:
        for t in live:
            log(f"stopping {t.name}")
            try:
                t.stop()
            except Exception as exc:  # keep stopping the others
                log(f"{t.name}: stop failed: {exc}")
            code = getattr(t, "exit_code", None)
            if code not in (None, 0):
                log(f"{t.name} exited {code} on SIGTERM (expected 0)")
                report["errors"][f"{t.name}_exit"] = code
        if milter is not None:
            milter.stop()
        if args.keep or failed:
            log(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    report["table"] = table(results, args.names, scenarios, args.quick)
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, default=str) + "\n"
    (RESULTS / "latest.json").write_text(text)
    (RESULTS / f"{stamp}.json").write_text(text)
    print()
    print(report["table"])
    print(f"\nresults: {RESULTS / 'latest.json'}")
    if failed:
        print("FAILED: see the log lines above and the JSON file", file=sys.stderr)
    return 1 if failed else 0


def access_list_config(workdir: Path, count: int) -> list[Path]:
    """An extra TOML whose [access] deny_file holds ``count`` random entries, none of
    them touching 127.0.0.0/8 (the benchmark's client); [] when ``count`` is 0."""
    if not count:
        return []
    import ipaddress
    import random

    from access_lookup import random_entries

    loopback = ipaddress.ip_network("127.0.0.0/8")

    def touches_loopback(entry: str) -> bool:
        if ":" in entry:
            return False
        if "-" in entry:
            start, end = (ipaddress.ip_address(a) for a in entry.split("-"))
            return start <= loopback[-1] and end >= loopback[0]
        return ipaddress.ip_network(entry, strict=False).overlaps(loopback)

    rng = random.Random(25)
    entries: list[str] = []
    while len(entries) < count:
        entries += [e for e in random_entries(count, rng) if not touches_loopback(e)]
    deny = workdir / "deny-list.txt"
    deny.write_text("\n".join(entries[:count]) + "\n")
    config = workdir / "access-list.toml"
    config.write_text(f'[access]\ndeny_file = "{deny}"\n')
    return [config]


def _git_describe() -> str | None:
    """The commit benchmarked, with "+dirty" when the work tree has changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None


def _postfix_version() -> str | None:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "postfix"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
