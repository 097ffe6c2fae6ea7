"""SfN start-up hook, installed as the top-level module ``_sfn_hook`` and imported by ``sfn_hook.pth``.

None of mergekit, TRL or lm-eval has a plugin entry point, so SfN plugs in *after* their own modules
finish importing: a finder on ``sys.meta_path`` wraps the loader of each watched module and, once the
module has executed, calls our callback (``"package.module:function"``, imported only then).
Standard library only: nothing heavy is imported at interpreter start-up.

Switch it off with ``SFN_DISABLE_HOOKS=1`` (all hooks) or ``SFN_DISABLE_HOOKS=mergekit,lm_eval``.
Other SfN tools add a hook by adding a row to ``HOOKS`` (watched module -> callbacks).
"""

import os
import sys

# watched module -> callbacks run (in order) right after it has been imported
HOOKS = {
    "mergekit.merge_methods": ("sfn_merge_plugin.mergekit_plugin:register_methods",),
    "mergekit.plan": ("sfn_merge_plugin.mergekit_plugin:patch_planner",),
    "mergekit.merge": ("sfn_merge_plugin.mergekit_plugin:patch_run_merge",),
    "mergekit.scripts.run_yaml": ("sfn_merge_plugin.mergekit_plugin:patch_run_yaml",),
    "trl.trainer.sft_trainer": ("sfn_merge_plugin.freeze.trl_hook:install",),
    "trl.cli.accelerate_launcher": ("sfn_merge_plugin.freeze.trl_hook:patch_launcher",),
    "lm_eval.tasks": ("sfn_merge_plugin.evaluation.lm_eval_hook:patch_task_manager",),
    "lm_eval.models": ("sfn_merge_plugin.evaluation.lm_eval_hook:register_models",),
    "lm_eval.__main__": ("sfn_merge_plugin.evaluation.lm_eval_hook:patch_cli",),
}

_FIRED = set()


def _disabled(module_name):
    value = os.environ.get("SFN_DISABLE_HOOKS", "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes", "all"):
        return True
    return module_name.split(".")[0].lower() in {v.strip() for v in value.split(",")}


def _run_callbacks(module_name):
    if module_name in _FIRED:
        return
    _FIRED.add(module_name)
    for target in HOOKS[module_name]:
        mod_name, _, func_name = target.partition(":")
        try:
            module = __import__(mod_name, fromlist=[func_name])
            getattr(module, func_name)()
        except Exception as exc:  # never break the host tool because of us
            sys.stderr.write(
                f"[sfn] warning: hook {target} for {module_name} failed: {exc!r}. "
                f"SfN features of {module_name.split('.')[0]} are unavailable; "
                "set SFN_DISABLE_HOOKS=1 to silence this.\n"
            )


class _HookedLoader:
    """Delegates to the real loader, then runs the callbacks."""

    def __init__(self, loader, module_name):
        self._loader = loader
        self._module_name = module_name

    def create_module(self, spec):
        if not hasattr(self._loader, "create_module"):
            return None
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _run_callbacks(self._module_name)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _PostImportFinder:
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in HOOKS or fullname in _FIRED or _disabled(fullname):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _HookedLoader(spec.loader, fullname)
                return spec
        return None


def install():
    """Put the finder first on sys.meta_path (idempotent)."""
    if not any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PostImportFinder())
    # a watched module imported before us (rare: only when imported by another .pth)
    for name in HOOKS:
        if name in sys.modules and not _disabled(name):
            _run_callbacks(name)


install()
