"""Subcommands of the ``deltaprop`` CLI, one module each (``add_parser`` and ``run``)."""
