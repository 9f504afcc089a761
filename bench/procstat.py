"""CPU time and memory of a server's whole process tree, read from /proc.

A server is a tree of processes (the appliance: a parent and its forked workers;
Postfix: master and the smtpd, cleanup, qmgr, trivial-rewrite, discard ... children
it spawns and reaps). The CPU a tree has used so far is

    sum over every live process P in the tree of
        utime(P) + stime(P) + cutime(P) + cstime(P)

because the kernel adds a child's utime+stime+cutime+cstime into its parent's
cutime+cstime when the parent reaps it (wait()). A child that exits between two
samples thus moves from "live, own time" into "master's cutime": the sum stays
exact. What escapes: a process that is reparented to init (it is no longer in the
tree) or not yet reaped (a zombie's time is still reported in its own stat, so
that one is fine). Postfix's master and the appliance both reap their children.

Reading many /proc files is not atomic; a child can exit and be reaped between
reading its stat and reading its parent's. :func:`tree_cpu` reads the tree twice
and retries until both reads agree on the set of processes and the root's
cutime+cstime (the usual case when taken at a quiet moment, as the bench does).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    comm: str
    utime: int  # clock ticks
    stime: int
    cutime: int
    cstime: int


def read_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may contain spaces and parentheses: it ends at the last ')'.
    lpar, rpar = data.index("("), data.rindex(")")
    fields = data[rpar + 2 :].split()
    # fields[0] is field 3 (state) of proc(5); utime is field 14.
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        comm=data[lpar + 1 : rpar],
        utime=int(fields[11]),
        stime=int(fields[12]),
        cutime=int(fields[13]),
        cstime=int(fields[14]),
    )


def all_stats() -> dict[int, ProcStat]:
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(int(name))
            if st is not None:
                stats[st.pid] = st
    return stats


def tree_pids(root: int, stats: dict[int, ProcStat] | None = None) -> list[int]:
    """The root and all its live descendants."""
    if stats is None:
        stats = all_stats()
    if root not in stats:
        return []
    children: dict[int, list[int]] = {}
    for st in stats.values():
        children.setdefault(st.ppid, []).append(st.pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return sorted(out)


def _tree_ticks(root: int) -> tuple[int, frozenset[int], int]:
    stats = all_stats()
    pids = tree_pids(root, stats)
    total = 0
    for pid in pids:
        st = stats[pid]
        total += st.utime + st.stime + st.cutime + st.cstime
    root_c = stats[root].cutime + stats[root].cstime if root in stats else -1
    return total, frozenset(pids), root_c


def tree_cpu(root: int, attempts: int = 20) -> float:
    """CPU seconds (user+system) used so far by the tree rooted at ``root``,
    including every descendant that has already exited and been reaped."""
    prev = _tree_ticks(root)
    for _ in range(attempts):
        cur = _tree_ticks(root)
        if cur[1] == prev[1] and cur[2] == prev[2]:
            return cur[0] / CLK_TCK
        prev = cur
    return prev[0] / CLK_TCK


def kernel_threads_cpu() -> float:
    """CPU seconds used so far by kernel threads (kthreadd, pid 2, and its children:
    kworkers doing ext4/jbd2 writeback, ksoftirqd ...). Work a server causes there,
    fsync and page writeback above all, is not charged to the server's processes."""
    stats = all_stats()
    return sum(stats[p].utime + stats[p].stime for p in tree_pids(2, stats)) / CLK_TCK


def system_busy_cpu() -> float:
    """CPU seconds all CPUs have spent busy since boot (user, nice, system, irq,
    softirq; not idle, iowait or steal), from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / CLK_TCK


def _status_kib(pid: int, key: bytes) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


@dataclass(frozen=True)
class Memory:
    processes: int
    rss_kib: int  # sum of VmRSS: counts shared pages once per process
    pss_kib: int  # sum of Pss: shared pages split between their users

    def as_dict(self) -> dict[str, float]:
        return {
            "processes": self.processes,
            "rss_mib": round(self.rss_kib / 1024, 1),
            "pss_mib": round(self.pss_kib / 1024, 1),
        }


def tree_memory(root: int) -> Memory:
    pids = tree_pids(root)
    return memory_of(pids)


def memory_of(pids: Iterable[int]) -> Memory:
    n = rss = pss = 0
    for pid in pids:
        n += 1
        rss += _status_kib(pid, b"VmRSS:")
        pss += _pss_kib(pid)
    return Memory(n, rss, pss)
