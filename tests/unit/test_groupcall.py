"""GroupCall: items submitted by many greenlets while a call runs form the next
call, in the real gevent thread pool (no monkey-patching needed for that)."""

import time

import gevent
import pytest

from appliance.hooks.plugin import GroupCall


def test_items_submitted_meanwhile_are_grouped_and_results_routed():
    calls = []

    def double(items):
        calls.append(list(items))
        time.sleep(0.05)  # a blocking call, in a pool thread
        return [ValueError(i) if i == 7 else i * 2 for i in items]

    group = GroupCall(double, threads=1)
    jobs = [gevent.spawn(group, 0)]
    gevent.sleep(0.02)  # the first call is running now
    jobs += [gevent.spawn(group, i) for i in range(1, 10)]
    gevent.joinall(jobs, timeout=10)
    assert [j.value for j in jobs if j.successful()] == [i * 2 for i in range(10) if i != 7]
    assert isinstance(jobs[7].exception, ValueError) and jobs[7].exception.args == (7,)
    assert sorted(sum(calls, [])) == list(range(10))
    assert calls[0] == [0] and len(calls) == 2  # the first alone, the other nine together


def test_at_most_threads_calls_at_once_and_max_items():
    running, peak, sizes = [0], [0], []

    def work(items):
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        sizes.append(len(items))
        time.sleep(0.02)
        running[0] -= 1
        return list(items)

    group = GroupCall(work, max_items=3, threads=2)
    jobs = [gevent.spawn(group, i) for i in range(20)]
    gevent.joinall(jobs, timeout=10)
    assert [j.value for j in jobs] == list(range(20))
    assert peak[0] == 2 and max(sizes) == 3


def test_a_failing_call_fails_each_of_its_items_and_the_next_call_runs():
    def boom(items):
        if 0 in items:
            raise RuntimeError("disk on fire")
        return list(items)

    group = GroupCall(boom, threads=1)
    with pytest.raises(RuntimeError, match="disk on fire"):
        group(0)
    assert group(5) == 5
