"""The machine deltaprop runs on: the library of the matrix products and its threads, numba and its threads,
malloc tuning, calibration, and every DELTAPROP_* setting (docs/architecture.md#runtime)."""
