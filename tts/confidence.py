"""DeepConf's token-confidence measures (Fu et al. 2025, "Deep Think with Confidence"), as pure functions.

Token confidence C_i = -(1/k) sum_j log P_i(j) over the k most likely tokens at position i: high when the
model is sure. The offline measures (lowest group, bottom-10%, tail) score a finished trace; the online
ones (`WindowMonitor`, `first_window_below`) decide, token by token, when a running trace has dropped
below a threshold and can be stopped. Both use the same windows, so a trace the online rule would stop
is exactly one whose offline lowest group confidence is below the threshold (for traces of at least one
window). Shared by the confidence scorers, the `deepconf` strategy and `tts scale`'s replay.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

DEFAULT_WINDOW = 2048  # DeepConf's group (window) size and tail length
DEFAULT_TOP_K = 20  # DeepConf's k (vLLM's logprobs=20)
BOTTOM_SHARE = 0.1  # DeepConf's "bottom 10%" group confidence


def token_confidence(top: Mapping[str, float]) -> float:
    """C of one position from its top-k log-probabilities (0 for an empty position, as the reference)."""
    return -sum(top.values()) / len(top) if top else 0.0


def group_means(conf: np.ndarray, window: int) -> np.ndarray:
    """Mean token confidence over every window of `window` consecutive tokens, in order.

    A trace shorter than the window is one group (its mean); an empty trace has no group.
    """
    conf = np.asarray(conf, dtype=np.float64)
    n = len(conf)
    if n == 0:
        return np.zeros(0)
    if n < window:
        return np.array([conf.mean()])
    sums = np.concatenate(([0.0], np.cumsum(conf)))
    return (sums[window:] - sums[:-window]) / window


def lowest_group_confidence(conf: np.ndarray, window: int = DEFAULT_WINDOW) -> float:
    """The least confident window's mean confidence (0 for an empty trace, as the reference)."""
    groups = group_means(conf, window)
    return float(groups.min()) if len(groups) else 0.0


def bottom_group_confidence(conf: np.ndarray, window: int = DEFAULT_WINDOW, share: float = BOTTOM_SHARE) -> float:
    """Mean of the least confident `share` of windows (at least one window; 0 for an empty trace)."""
    groups = group_means(conf, window)
    if not len(groups):
        return 0.0
    count = max(1, int(len(groups) * share))
    return float(np.sort(groups)[:count].mean())


def tail_confidence(conf: np.ndarray, tail: int = DEFAULT_WINDOW) -> float:
    """Mean confidence of the last `tail` tokens (the whole trace when shorter; 0 for an empty trace)."""
    conf = np.asarray(conf, dtype=np.float64)
    return float(conf[-tail:].mean()) if len(conf) else 0.0




# ---- online: stop a running trace -----------------------------------------------------------------------

def threshold_from_warmup(warmup: Sequence[float], keep_percent: float) -> float:
    """DeepConf's stopping threshold s: the (100 - keep_percent)-th percentile of the warm-up traces' lowest
    group confidences, so about keep_percent % of traces like them would survive (10: DeepConf-low,
    90: DeepConf-high). numpy's linear interpolation, as the reference's `np.percentile`."""
    if not len(warmup):
        raise ValueError("no warm-up trace to set the threshold from")
    return float(np.percentile(np.asarray(warmup, dtype=np.float64), 100.0 - keep_percent))


class WindowMonitor:
    """Feeds on a running trace's token confidences; says stop at the first full window whose mean is
    below the threshold. `tokens` is how many tokens it has seen (the generated length at the stop)."""

    def __init__(self, window: int, threshold: float):
        if window < 1:
            raise ValueError("window must be at least 1")
        self.window = window
        self.threshold = threshold
        self.tokens = 0
        self.stopped = False
        self._last: deque[float] = deque()
        self._sum = 0.0

    def push(self, confidences: Iterable[float]) -> bool:
        """Add the newest tokens' C; True once a full window's mean fell below the threshold (then it stays
        True and later tokens are ignored: they would not have been generated)."""
        if self.stopped:
            return True
        for c in confidences:
            self.tokens += 1
            self._last.append(float(c))
            self._sum += float(c)
            if len(self._last) > self.window:
                self._sum -= self._last.popleft()
            if len(self._last) == self.window and self._sum / self.window < self.threshold:
                self.stopped = True
                return True
        return False


def first_window_below(conf: Sequence[float] | np.ndarray, window: int, threshold: float) -> int | None:
    """Tokens generated when the online rule stops this trace (the end of its first full window with mean
    below `threshold`), or None if it runs to the end. The replay of `WindowMonitor` on a stored trace."""
    groups = group_means(np.asarray(conf, dtype=np.float64), window)
    if len(conf) < window:
        return None
    below = np.flatnonzero(groups < threshold)
    return int(below[0]) + window if len(below) else None
