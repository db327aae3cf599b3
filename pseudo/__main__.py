"""``python -m pseudo`` runs the command line."""

from pseudo.cli.app import main

main()
