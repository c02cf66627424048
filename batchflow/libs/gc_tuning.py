"""What a loop over millions of records needs from the interpreter: a garbage collector that keeps out of the way."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# A young-generation collection every million net allocations instead of every 700. Parsed JSON, rendered requests
# and output rows hold no reference cycles, so the collector finds nothing in them; but while a shard's results sit
# in a dict (hundreds of thousands of objects), every collection walks them again: half of a merge's time at the
# default thresholds. Cyclic garbage, should any appear, is still collected, a million objects at a time.
_THRESHOLDS = (1_000_000, 10, 10)


@contextmanager
def relaxed_gc() -> Iterator[None]:
    """Collect garbage cycles rarely for the duration of a hot loop; the previous thresholds after it."""
    before = gc.get_threshold()
    gc.set_threshold(*_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
