"""Subcommands of the `lewm-fast` command line (see `lewm_fast.cli`)."""
