"""The `devstream` command line."""
