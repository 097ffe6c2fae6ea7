"""TRL has no YAML/CLI way to freeze parameters or add callbacks, so SfN reads its selection from a field
TRL already accepts: ``model_init_kwargs: {sfn_trainable: ...}``.

That field fails closed: without SfN's hook the key reaches ``from_pretrained``, which raises a TypeError
about the unknown keyword, instead of silently training everything. ``install()`` (run by ``_sfn_hook``
right after ``trl.trainer.sft_trainer`` imports) wraps ``SFTTrainer.__init__``: it takes the key out
before the model is created and adds a ``FreezeCallback``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect

KEY = "sfn_trainable"


def install() -> None:
    """Wrap ``SFTTrainer.__init__`` once (idempotent)."""
    from trl.trainer import sft_trainer

    cls = sft_trainer.SFTTrainer
    if getattr(cls.__init__, "_sfn_patched", False):
        return
    original = cls.__init__
    signature = inspect.signature(original)

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        config = bound.arguments.get("args")
        init_kwargs = getattr(config, "model_init_kwargs", None)
        if not isinstance(init_kwargs, dict) or KEY not in init_kwargs:
            return original(self, *args, **kwargs)
        with _one_line():
            _check_recipe_file()
            _init(self, original, bound, config, init_kwargs)

    def _init(self, original, bound, config, init_kwargs):
        callback = _callback_for(init_kwargs[KEY], bound.arguments)
        bound.arguments["callbacks"] = list(bound.arguments.get("callbacks") or []) + [callback]
        rest = {k: v for k, v in init_kwargs.items() if k != KEY}
        config.model_init_kwargs = rest or None  # None: no "model_init_kwargs ignored" warning for a model object
        try:
            original(*bound.args, **bound.kwargs)
        finally:
            config.model_init_kwargs = init_kwargs  # the caller's config is left as it was given
        self._sfn_freeze = callback

    original_train = cls.train

    @functools.wraps(original_train)
    def train(self, *args, **kwargs):
        if getattr(self, "_sfn_freeze", None) is None:
            return original_train(self, *args, **kwargs)
        with _one_line():
            return original_train(self, *args, **kwargs)

    __init__._sfn_patched = True
    cls.__init__, cls.train = __init__, train


REPORTED = 2  # exit code of a training process that already printed its one-line SfN error


def _under_trl_cli() -> bool:
    """True in the process ``trl sft`` launches (``python .../trl/scripts/sft.py`` or ``-m trl.scripts.sft``)."""
    import sys

    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and str(spec.name).startswith("trl.scripts."):
        return True
    argv0 = sys.argv[0].replace("\\", "/") if sys.argv else ""
    return "/trl/scripts/" in argv0


@contextlib.contextmanager
def _one_line():
    """Under ``trl sft``, an SfN error is one line on stderr and exit code 2 (the launcher stays quiet about
    it, see ``patch_launcher``); called as a library, the exception propagates as usual."""
    from sfn_merge_plugin.errors import SfnError

    try:
        yield
    except SfnError as exc:
        if not _under_trl_cli():
            raise
        import sys

        sys.stderr.write(f"sfn: error: {exc}\n")
        sys.stderr.flush()
        raise SystemExit(REPORTED) from None


def _check_recipe_file() -> None:
    """The ``--config`` YAML of ``trl sft`` read strictly: PyYAML keeps the last of two equal keys (two
    ``sfn_trainable:`` lines would silently train the second selection)."""
    import sys

    from sfn_merge_plugin.freeze.selection import FreezeError
    from sfn_merge_plugin.strict_yaml import duplicate_key_error, read_text

    argv = sys.argv[1:]
    path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if path is None and "--config" in argv and argv.index("--config") + 1 < len(argv):
        path = argv[argv.index("--config") + 1]
    if path is None:
        return
    dup = duplicate_key_error(read_text(path, "TRL recipe"), f"TRL recipe {path}")
    if dup is not None:
        raise FreezeError(str(dup))


def patch_launcher() -> None:
    """``trl sft`` runs training in a child process; when that child already printed its one-line SfN error
    (exit code 2), exit with it instead of adding accelerate's CalledProcessError traceback."""
    import subprocess

    from trl.cli import accelerate_launcher as launcher

    original = launcher.launch_training_script
    if getattr(original, "_sfn_patched", False):
        return

    @functools.wraps(original)
    def launch_training_script(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        except subprocess.CalledProcessError as exc:
            if exc.returncode == REPORTED:
                raise SystemExit(REPORTED) from None
            raise

    launch_training_script._sfn_patched = True
    launcher.launch_training_script = launch_training_script
    import sys

    for name, mod in list(sys.modules.items()):  # modules that imported it by name before the hook ran
        if name.startswith("trl.cli") and getattr(mod, "launch_training_script", None) is original:
            mod.launch_training_script = launch_training_script


def _callback_for(spec, arguments):
    from sfn_merge_plugin.freeze.callback import FreezeCallback

    if arguments.get("peft_config") is not None:
        from sfn_merge_plugin.freeze.selection import FreezeError

        raise FreezeError(f"model_init_kwargs.{KEY} and peft_config are both set: PEFT trains adapters, "
                          f"{KEY} trains a full model's selected modules. Use one of them")
    if any(isinstance(cb, FreezeCallback) for cb in arguments.get("callbacks") or []):
        from sfn_merge_plugin.freeze.selection import FreezeError

        raise FreezeError(f"model_init_kwargs.{KEY} is set and a FreezeCallback was passed too; use one of them")
    return FreezeCallback(spec)  # validates the spec now, before the model is loaded
