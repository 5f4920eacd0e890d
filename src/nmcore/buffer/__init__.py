"""Sample history: the numba ring buffer and the device sample-counter tracker.

No asyncio here: both are driven by the runtime, one call per block.
"""

from nmcore.buffer.ring import PushResult, RingBuffer, RingState, Window
from nmcore.buffer.sequence import Admission, SequenceTotals, SequenceTracker

__all__ = [
    "Admission",
    "PushResult",
    "RingBuffer",
    "RingState",
    "SequenceTotals",
    "SequenceTracker",
    "Window",
]
