"""The process-wide settings a lab run needs, set for the run and restored afterwards.

``run_environment(threads)`` sets torch's thread count, the environment variables the Freeze processes
read (``OMP_WAIT_POLICY``, ``HF_DATASETS_OFFLINE``), transformers' and mergekit's log levels and
progress bars, and matplotlib's backend; on exit every one is put back as the caller had it.
``describe()`` records what a run's bits depend on (versions, thread count, the CPU kernel path).
"""

from __future__ import annotations

import contextlib
import os
import platform

ENV = {"OMP_WAIT_POLICY": "PASSIVE",  # idle OpenMP threads sleep: busy-waiting stalls a shared CPU
       "HF_DATASETS_OFFLINE": "1",  # the Freeze data is a local file: no hub lookups
       "TOKENIZERS_PARALLELISM": "false"}  # no tokenizer threads fighting torch's
QUIET_LOGGERS = ("mergekit",)  # python loggers raised to WARNING during the run


@contextlib.contextmanager
def run_environment(threads: int):
    """Set the run's process-wide state; restore the caller's on exit (error or not)."""
    import logging

    import torch

    saved_env = {k: os.environ.get(k) for k in ENV}
    saved_threads = torch.get_num_threads()
    saved_levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    hf = _hf_logging()
    saved_hf = (hf.get_verbosity(), hf.is_progress_bar_enabled()) if hf else None
    saved_backend = _matplotlib_backend()
    try:
        for k, v in ENV.items():
            os.environ.setdefault(k, v)
        torch.set_num_threads(int(threads))
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        if hf:
            hf.disable_progress_bar()
            hf.set_verbosity_error()
        _set_matplotlib_backend("Agg")
        yield
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        torch.set_num_threads(saved_threads)
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
        if hf and saved_hf:
            hf.set_verbosity(saved_hf[0])
            (hf.enable_progress_bar if saved_hf[1] else hf.disable_progress_bar)()
        if saved_backend is not None:
            _set_matplotlib_backend(saved_backend)


def _hf_logging():
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return None
    return hf_logging


def _matplotlib_backend():
    """The current backend if matplotlib is already imported (importing it here would choose one)."""
    import sys

    mpl = sys.modules.get("matplotlib")
    return mpl.get_backend() if mpl is not None else None


def _set_matplotlib_backend(name: str) -> None:
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use(name, force=True)


def describe() -> dict:
    """What a run's numbers depend on, bit for bit: library versions, threads, and the CPU kernel path."""
    import torch

    from sfn_merge_plugin import __version__

    info = {"sfn": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(), "cpu_capability": _cpu_capability(),
            "cpu": _cpu_model(), "cpus": os.cpu_count(), "platform": platform.platform()}
    for name in ("transformers", "tokenizers", "trl", "mergekit", "accelerate", "datasets", "numpy"):
        info[name] = _version(name)
    return info


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _cpu_capability() -> str | None:
    import torch

    try:
        return torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - older torch
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
