"""Task plugins. Importing this package registers every task: each module of this package, then
every task another installed package declares under the `mmunlearn.tasks` entry-point group, so
a new task is one file (here, or in a package of your own)."""
import importlib
import pkgutil

from harness.plugins import load_entry_points
from tasks.base import (TASK_REGISTRY, SampleResult, Task, TaskContext, get_task, prompt_hash, register_task,
                        knowledge_falls, registered_tasks)

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_info.name}")
load_entry_points("mmunlearn.tasks")

__all__ = ["TASK_REGISTRY", "SampleResult", "Task", "TaskContext", "get_task", "prompt_hash", "register_task",
           "knowledge_falls", "registered_tasks"]
