"""The one exponential back-off with jitter.

Used by whatever retries against a shared service (the libvirt
reconnect, the notification sender): exponential so an outage is not
hammered, capped so a recovered service is reached again soon, and
jittered so hosts that failed together do not retry in lock-step.
"""
from __future__ import annotations

import random
from typing import Callable


def next_delay(attempt: int, base: float, cap: float,
               rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based):
    ``base * 2**(attempt-1)``, at most ``cap``, scaled by a jitter in
    [0.5, 1.0]."""
    if base <= 0 or cap <= 0:
        raise ValueError("back-off base and cap must be > 0")
    exponent = min(max(attempt, 1) - 1, 62)   # 2**62 s is beyond any cap
    return min(base * (2 ** exponent), cap) * (0.5 + 0.5 * rng())
