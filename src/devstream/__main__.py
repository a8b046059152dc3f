"""`python -m devstream` runs the command line."""

from devstream.cli.app import main

main()
