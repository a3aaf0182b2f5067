"""Timing shared by the benchmarks: the seconds of one call, and paired rounds against a baseline.

The scripts run as ``python benchmarks/<name>.py``, so this module is imported as ``timing``.
"""

from __future__ import annotations

import statistics
import time


def timed(fn) -> float:
    """Wall-clock seconds of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed_cpu(fn) -> tuple[float, float]:
    """Wall-clock and process CPU seconds (all threads) of one call: CPU time is robust to a busy machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def paired(fn, baseline, repeats: int) -> tuple[float, float]:
    """Median time of ``fn`` and median of ``time(fn) / time(baseline)`` over alternating rounds, after a warm-up call of each."""
    fn(), baseline()  # warm-up: tracing
    times, ratios = [], []
    for _ in range(repeats):
        b = timed(baseline)
        t = timed(fn)
        times.append(t)
        ratios.append(t / b)
    return statistics.median(times), statistics.median(ratios)
