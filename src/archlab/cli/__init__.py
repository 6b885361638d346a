"""The ``arch`` command line. Commands are thin: parse, call the library, print.

Heavy imports (torch, networkx) happen inside command bodies, so ``arch --help`` and
``arch validate`` answer without loading torch.
"""

from archlab.cli.main import cli, main

__all__ = ["cli", "main"]
