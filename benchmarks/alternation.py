"""What the in-process A/B benchmarks (``row_sets.py``, ``whole_batches.py``, ``eval_speed.py``) print for two
variants timed alternately: each one's median and the ratio of the medians with the range of the ratios of
the repeats (a repeat times both variants back to back, so their ratio cancels most of a shared machine's drift)."""

from __future__ import annotations

import statistics


def compare(first: list[float], second: list[float]) -> str:
    """``| median first | median second | first / second (lowest-highest repeat) |`` cells of a Markdown row."""
    ratios = [a / b for a, b in zip(first, second)]
    a, b = statistics.median(first), statistics.median(second)
    return f"{a:.3f} | {b:.3f} | {a / b:.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
