"""Task plugins. Importing this package registers every task; add a new task's module below."""
from tasks import classification, cloze, generation  # noqa: F401  (import = registration)
from tasks.base import TASK_REGISTRY, SampleResult, Task, TaskContext, get_task, prompt_hash, register_task

__all__ = ["TASK_REGISTRY", "SampleResult", "Task", "TaskContext", "get_task", "prompt_hash", "register_task"]
