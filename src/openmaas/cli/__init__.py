"""The `openmaas` command line."""
