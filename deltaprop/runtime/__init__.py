"""The machine deltaprop runs on: the library of the matrix products and its threads, numba and its threads,
malloc tuning, calibration (``deltaprop.tune()``), and every DELTAPROP_* setting (docs/runtime.md)."""
