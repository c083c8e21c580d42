"""The commands: argparse and ``main`` only, one module per console script."""
