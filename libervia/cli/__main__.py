"""``python -m libervia.cli``: the same as ``li``."""

from libervia.cli.main import run

run()
