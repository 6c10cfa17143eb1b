"""One error type per kind of bad input, so callers (and tests) can tell them apart."""


class MMUnlearnError(Exception):
    """Base class: every error the harness raises on purpose."""


class BenchmarkError(MMUnlearnError, ValueError):
    """Malformed or missing benchmark data. The message names config, row index and field."""

    def __init__(self, config: str, row: int | None, field: str | None, problem: str):
        self.config, self.row, self.field, self.problem = config, row, field, problem
        where = f"config {config!r}"
        if row is not None:
            where += f", row {row}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {problem}")


class ModelLoadError(MMUnlearnError, ValueError):
    """A model path/id that does not exist or is not a supported vision-language model."""


class ConfigError(MMUnlearnError, ValueError):
    """Bad user configuration: unknown method/task, bad parameter value, clashing run directory."""
