"""CLI subcommands, one module each (discovered by harness.cli)."""
