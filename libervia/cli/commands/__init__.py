"""The command groups of ``li``, one module each (see :mod:`libervia.cli.base`)."""
