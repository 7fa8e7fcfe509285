"""``python -m herder`` is the ``herder`` command."""

from herder.cli import main

main()
