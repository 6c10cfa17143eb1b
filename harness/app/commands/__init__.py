"""CLI subcommands, one module each (discovered by mmunlearn.harness.app.cli)."""
