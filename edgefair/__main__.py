"""``python -m edgefair`` runs the CLI."""

from edgefair.cli import main

main()
