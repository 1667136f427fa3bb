"""The project's own exception types. Every message names the problem: shape, dtype, value, file or line."""
from __future__ import annotations


class DeltapropError(Exception):
    """Base class of every error deltaprop raises on bad input."""


class ShapeError(DeltapropError, ValueError):
    """An array has the wrong number of dimensions or the wrong size."""


class DTypeError(DeltapropError, TypeError):
    """An array has the wrong dtype (integer images into a float model, float64 into a float32 model...)."""


class NonFiniteError(DeltapropError, FloatingPointError):
    """A NaN or infinity where finite numbers are required."""


class LabelError(DeltapropError, ValueError):
    """Class labels out of range or of the wrong kind."""


class StateDictError(DeltapropError, KeyError):
    """A state dict with missing, unexpected or wrongly shaped entries."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class BackwardError(DeltapropError, RuntimeError):
    """backward() called without a forward pass that kept its cache."""


class ConfigError(DeltapropError, ValueError):
    """A malformed configuration: a Darknet .cfg (names the file, line and key) or an environment setting
    (names the variable)."""


class WeightsError(DeltapropError, ValueError):
    """A truncated, oversized or otherwise malformed weights file."""


class CheckpointError(DeltapropError, ValueError):
    """A checkpoint that cannot be loaded (corrupt, or of another architecture)."""


class DataError(DeltapropError, ValueError):
    """A malformed data file (bad IDX magic, truncated file, bad label line...)."""


class DivergenceError(DeltapropError, FloatingPointError):
    """Training produced a NaN or infinite loss; names the step and the first non-finite layer."""


class ValueRangeError(DeltapropError, ValueError):
    """Values outside their allowed range (probabilities outside [0, 1], ...)."""
