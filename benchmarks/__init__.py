"""Built-in benchmark plugins, one file each (the `mmunlearn.benchmarks` entry point `builtin`):
each maps a benchmark's layout onto the harness's records (harness.core.bench)."""

from mmunlearn.benchmarks import mllmu_bench  # noqa: F401
