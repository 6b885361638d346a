"""``python -m archlab`` runs the ``arch`` command line."""

from archlab.cli import main

main()
