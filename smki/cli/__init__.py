"""The `smki` command line: one click group per actor."""
