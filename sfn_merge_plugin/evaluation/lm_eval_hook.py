"""How ``lm_eval --tasks sfn_aime24 --model sfn-hf`` works with no extra flag (called by SfN's start-up hook).

lm-eval 0.4.13 has no plugin entry points, so right after ``lm_eval.tasks`` is imported we make every
``TaskManager`` also index SfN's task folder (BEFORE the user's ``--include_path``, so a user task of the
same name still wins; not with ``include_defaults=False``, which asks for the caller's folders only),
and right after ``lm_eval.models`` is imported we register our two models (AFTER
lm-eval's built-ins: registering earlier would stop lm-eval from loading ``hf``, ``vllm``...).
The official route needs no hook: ``--include_path $(sfn eval-path)``.
"""

from __future__ import annotations

import functools
import inspect

MODELS = {
    "sfn-hf": "sfn_merge_plugin.evaluation.lm_eval_models:SfnHFLM",
    "sfn-vllm": "sfn_merge_plugin.evaluation.lm_eval_models:SfnVLLM",
}


def task_dir() -> str:
    """The folder of SfN's task YAMLs (inside the wheel, or the checkout's eval_tasks/)."""
    from sfn_merge_plugin.resources import resource_dir

    return str(resource_dir("eval_tasks"))


def with_sfn_tasks(include_path):
    """``include_path`` as a list with SfN's folder first (once)."""
    ours = task_dir()
    if include_path is None:
        user = []
    elif isinstance(include_path, (list, tuple)):
        user = [str(p) for p in include_path]
    else:
        user = [str(include_path)]
    return [ours] + [p for p in user if p != ours]


def patch_task_manager():
    """Make ``lm_eval.tasks.TaskManager`` index SfN's tasks (idempotent)."""
    from lm_eval.tasks.manager import TaskManager

    original = TaskManager.__init__
    if getattr(original, "_sfn_patched", False):
        return
    signature = inspect.signature(original)

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        if not bound.arguments.get("include_defaults", True):
            return original(*bound.args, **bound.kwargs)  # only the caller's folders: SfN's tasks are defaults too
        user = bound.arguments.get("include_path")
        bound.arguments["include_path"] = with_sfn_tasks(user)
        original(*bound.args, **bound.kwargs)
        self.include_path = user  # what the caller passed, as lm-eval keeps it

    __init__._sfn_patched = True
    __init__._sfn_original = original
    TaskManager.__init__ = __init__


def register_models():
    """Register ``sfn-hf`` and ``sfn-vllm`` as lazy placeholders (nothing heavy is imported here)."""
    from lm_eval.api.registry import model_registry

    for name, target in MODELS.items():
        if name not in model_registry:  # a future lm-eval may already have them from our entry points
            model_registry.register(name, target=target)


def patch_cli() -> None:
    """``lm_eval`` / ``lm-eval``: an SfN error (a missing data file, a bad budget-forcing argument...) is one
    line and exit code 2, not the last line of a long traceback. Other errors are left to lm-eval."""
    import lm_eval.__main__ as entry

    original = entry.cli_evaluate
    if getattr(original, "_sfn_patched", False):
        return

    @functools.wraps(original)
    def cli_evaluate(*args, **kwargs):
        import sys

        from sfn_merge_plugin.errors import SfnError

        try:
            return original(*args, **kwargs)
        except SfnError as exc:
            sys.stderr.write(f"lm_eval: error: {exc}\n")
            raise SystemExit(2) from None

    cli_evaluate._sfn_patched = True
    entry.cli_evaluate = cli_evaluate
