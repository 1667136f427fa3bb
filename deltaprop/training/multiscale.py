"""Darknet's multi-scale training (``random=1`` on the last [yolo] layer), the one rule of deltaprop.

pjreddie/darknet f6afaabc, examples/detector.c lines 63-66 (``train_detector``)::

    if(l.random && count++%10 == 0){
        int dim = (rand() % 10 + 10) * 32;
        if (get_current_batch(net)+200 > net->max_batches) dim = 608;
        ... resize_network(nets[i], dim, dim);

Before every 10th batch (the first included) the network and the data loader take a new
square size drawn uniformly from the multiples of 32 in ``[lo, hi]``; the largest once fewer than 200 batches
remain. Darknet's literal sizes, 320..608, are those of its 416×416 cfgs; for another cfg the range keeps
Darknet's ratios, ``size·320/416 .. size·608/416`` rounded to multiples of 32 (``darknet_range``), so a 416 cfg
gets exactly 320..608 (ten sizes: ``rand() % 10``) and the 128×128 digit detector 96..192. A non-square cfg keeps
its aspect ratio (Darknet makes every size square): the height is the drawn width's share of the cfg's.

Darknet's counter starts again with each process; here the counter and the generator are part of a checkpoint,
so a resumed run draws what the uninterrupted one drew.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ..errors import ConfigError
from .loop import Callback, Loop

EVERY = 10          # count++ % 10
SMALLEST, LARGEST, DARKNET_SIZE = 320, 608, 416
LAST_BATCHES = 200  # get_current_batch(net) + 200 > max_batches: the largest size


def _round32(v: float) -> int:
    return max(32, 32 * int(round(v / 32)))


def darknet_range(width: int) -> Tuple[int, int]:
    """(smallest, largest) square size for a cfg ``width`` wide: Darknet's 320..608 at 416, same ratios else."""
    return _round32(width * SMALLEST / DARKNET_SIZE), _round32(width * LARGEST / DARKNET_SIZE)


class MultiScale:
    """The rule's state: the range, the batch counter and the random generator. ``next_size(batch,
    max_batches)`` is asked before each batch; it gives a new (width, height) before every 10th, else None."""

    def __init__(self, base: Tuple[int, int], sizes: Optional[Tuple[int, int]] = None,
                 rng: Optional[np.random.Generator] = None) -> None:
        w0, h0 = int(base[0]), int(base[1])
        lo, hi = darknet_range(w0) if sizes is None else (int(sizes[0]), int(sizes[1]))
        if lo < 32 or hi < lo or lo % 32 or hi % 32:
            raise ConfigError(f"multiscale sizes must be multiples of 32 with 32 ≤ smallest ≤ largest, got ({lo}, {hi})")
        self.base, self.sizes = (w0, h0), (lo, hi)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.count = 0

    def _size(self, width: int) -> Tuple[int, int]:
        w0, h0 = self.base
        return width, (width if w0 == h0 else _round32(h0 * width / w0))

    def next_size(self, batch: int, max_batches: int) -> Optional[Tuple[int, int]]:
        count = self.count
        self.count += 1
        if count % EVERY:
            return None
        lo, hi = self.sizes
        width = lo + 32 * int(self.rng.integers((hi - lo) // 32 + 1))
        if batch + LAST_BATCHES > max_batches:
            width = hi
        return self._size(width)

    def state_dict(self) -> Dict[str, Any]:
        return {"count": self.count, "rng": json.dumps(self.rng.bit_generator.state)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.count = int(state.get("count", 0))
        if state.get("rng"):
            self.rng.bit_generator.state = json.loads(state["rng"])


class MultiScaleCallback(Callback):
    """Asks ``rule`` before each batch and, for a new size, calls ``resize(width, height)`` (the network and the
    loader) when it differs from ``current()``."""

    key = "multiscale"

    def __init__(self, rule: MultiScale, resize: Callable[[int, int], None],
                 current: Callable[[], Tuple[int, int]]) -> None:
        self.rule, self.resize, self.current = rule, resize, current

    def before_step(self, loop: Loop) -> None:
        task = loop.task
        size = self.rule.next_size(task.steps_done, task.total_steps)
        if size is not None and tuple(size) != tuple(self.current()):
            self.resize(*size)

    def state_dict(self) -> Dict[str, Any]:
        return self.rule.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.rule.load_state_dict(state)


__all__ = ["MultiScale", "MultiScaleCallback", "darknet_range"]
