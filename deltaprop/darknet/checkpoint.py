"""Checkpoints of Darknet training runs: ONE ``.npz`` per checkpoint (``<base>_<n>.state.npz``) holds the weights,
``seen``, the SGD momentum, the running loss, the random states, the loader's position, the loop's state and the
history (``deltaprop.io.save_checkpoint``, written atomically); the Darknet ``.weights`` beside it is a copy for
Darknet's tools, written after it. So a ``.weights`` whose state agrees (the same ``seen``) is a complete
checkpoint, and a save killed between the two files leaves a state newer than its ``.weights``: the pair
disagrees, and ``newest_checkpoint`` names the newest checkpoint that is whole.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from ..errors import CheckpointError, DeltapropError, WeightsError

PathLike = Union[str, Path]
STATE_SUFFIX = ".state.npz"
KEY = "darknet_fit"      # the checkpoint's extra entry (the run's own state)


def state_path(weights: PathLike) -> Path:
    """The ``.state.npz`` beside a ``.weights`` checkpoint."""
    p = Path(weights)
    return p.with_name(p.stem + STATE_SUFFIX)


def weights_path(state: PathLike) -> Path:
    """The ``.weights`` beside a ``.state.npz``."""
    p = Path(state)
    return p.with_name(p.name[:-len(STATE_SUFFIX)] + ".weights") if p.name.endswith(STATE_SUFFIX) else \
        p.with_suffix(".weights")


def weights_seen(path: PathLike) -> Optional[int]:
    """``seen`` from a ``.weights`` header (None when the file is missing or not a weights file)."""
    from .weights import parse_header
    try:
        with open(path, "rb") as f:
            head = f.read(20)
        return int(parse_header(head, str(path))[1])
    except (OSError, WeightsError):
        return None


def save_state(path: PathLike, trainer, loop=None, extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write the run's state (atomically): the net, its optimizer, the global random state and
    ``extra[KEY]``: seen, max_batches, avg_loss, the trainer's generator, the loop's callbacks, ``extra``."""
    from ..io import save_checkpoint
    state = {**trainer.state(), **(loop.state_dict() if loop is not None else {}), **(extra or {})}
    return save_checkpoint(path, trainer.net, trainer.optimizer, step=trainer.current_batch,
                           history=loop.state.history if loop is not None else [], extra={KEY: state})


def run_state(ck) -> Dict[str, Any]:
    """The run's state of a checkpoint read with ``io.read_checkpoint`` (CheckpointError when it has none)."""
    state = ck.extra.get(KEY)
    if not isinstance(state, dict) or "seen" not in state:
        raise CheckpointError(f"{ck.path}: not a checkpoint of a Darknet training run (no {KEY} state)")
    return state


@dataclass
class Found:
    """A whole checkpoint: its state file, the ``.weights`` that agrees with it (None when that pair
    disagrees or the ``.weights`` is missing) and its batch number."""
    state: Path
    weights: Optional[Path]
    batch: int

    @property
    def name(self) -> Path:
        """What to give the trainer to resume: the ``.weights`` when it agrees, else the state itself."""
        return self.weights or self.state


def newest_checkpoint(folder: PathLike, base: str) -> Optional[Found]:
    """The checkpoint of run ``base`` in ``folder`` with the highest batch whose state file reads whole
    (every member's CRC checked), one whose ``.weights`` agrees first; None when there is none."""
    from ..io import read_checkpoint
    found: List[Found] = []
    for sp in Path(folder).glob(f"{base}_*{STATE_SUFFIX}"):
        try:
            state = run_state(read_checkpoint(sp))
        except (DeltapropError, OSError):
            continue
        wp = weights_path(sp)
        agrees = weights_seen(wp) == int(state["seen"])
        found.append(Found(sp, wp if agrees else None, int(state.get("batch", 0))))
    return max(found, key=lambda f: (f.batch, f.weights is not None), default=None)


__all__ = ["state_path", "weights_path", "weights_seen", "save_state", "run_state", "newest_checkpoint", "Found",
           "STATE_SUFFIX", "KEY"]
