"""Latency histograms with fixed buckets, and percentile estimates from them.

Each stored row keeps one count per bucket, so rows add up element-wise (across requests, days and
months) and a percentile of any range is estimated from the summed counts.
"""

from __future__ import annotations

from collections.abc import Sequence

# Inclusive upper bounds in milliseconds. A latency above the last bound goes into one more bucket,
# so a histogram has len(LATENCY_BUCKET_BOUNDS_MS) + 1 counts. The migrations check that length:
# changing the bounds means a new migration and a rewrite of stored rows.
LATENCY_BUCKET_BOUNDS_MS: tuple[int, ...] = (
    10,
    25,
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    30_000,
    60_000,
    120_000,
    300_000,
)
BUCKET_COUNT = len(LATENCY_BUCKET_BOUNDS_MS) + 1


def bucket_index(latency_ms: int) -> int:
    """Return the index of the bucket that ``latency_ms`` falls into."""
    for index, bound in enumerate(LATENCY_BUCKET_BOUNDS_MS):
        if latency_ms <= bound:
            return index
    return BUCKET_COUNT - 1


def estimate_percentile(counts: Sequence[int], quantile: float, min_ms: int, max_ms: int) -> int | None:
    """Estimate a latency percentile in ms from bucket counts; None when the counts are all zero.

    The estimate interpolates linearly inside the bucket that contains the requested rank, with that
    bucket's edges narrowed to the known minimum and maximum. It is exact when a bucket holds one
    value and otherwise off by at most the width of one bucket.
    """
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be from 0 to 1, got {quantile!r}")
    if len(counts) != BUCKET_COUNT:
        raise ValueError(f"a latency histogram has {BUCKET_COUNT} counts, got {len(counts)}")
    total = sum(counts)
    if total == 0:
        return None

    rank = max(1.0, quantile * total)
    below = 0
    for index, count in enumerate(counts):
        if count == 0 or below + count < rank:
            below += count
            continue
        lower = LATENCY_BUCKET_BOUNDS_MS[index - 1] if index > 0 else 0
        upper = LATENCY_BUCKET_BOUNDS_MS[index] if index < len(LATENCY_BUCKET_BOUNDS_MS) else max_ms
        lower, upper = max(lower, min_ms), min(upper, max_ms)
        if upper <= lower:
            return lower
        return round(lower + (upper - lower) * (rank - below) / count)
    return max_ms
