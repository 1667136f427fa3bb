"""Box geometry and letterboxing, below ``functional``, ``data`` and ``detect`` (docs/architecture.md#layers)."""
