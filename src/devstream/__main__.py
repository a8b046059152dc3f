"""`python -m devstream` runs the command line."""

from devstream.cli.app import run

run()
