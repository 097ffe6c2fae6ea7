"""The lab's Freeze runs, each in its own process (so its peak memory is its own): a ``Worker`` imports the
libraries once and forks one child per run; ``run_all`` spreads jobs over several workers.

The worker is this module run as ``python -m sfn_merge_plugin.lab.freeze_workers``: one JSON job per stdin
line (``freeze_run.run_freeze_spec``'s arguments), one JSON reply per stdout line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# imported once by the worker, so a run's process starts with them (a cold import costs seconds per run)
_PRELOAD = ["torch", "transformers", "datasets", "accelerate", "trl.scripts.sft", "trl.trainer.sft_trainer",
            "transformers.models.qwen2.modeling_qwen2", "sfn_merge_plugin.freeze.callback",
            "sfn_merge_plugin.evaluation.hf_backend", "sfn_merge_plugin.grading", "sfn_merge_plugin.lab.measure",
            "sfn_merge_plugin.lab.freeze_run"]


class Worker:
    """A process that has the libraries imported and forks one child per Freeze run: every run starts fresh
    (its own peak memory, no state carried over) without paying the imports again. The worker never
    computes anything itself, so forking it is safe for OpenMP.

        with Worker(log_file) as w:
            result = w.run(dict(preset="oproj", model=..., ...))"""

    def __init__(self, log_file):
        self.log_file = Path(log_file)

    def __enter__(self):
        import subprocess
        import sys

        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_file, "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "sfn_merge_plugin.lab.freeze_workers"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1)
        self._ready = False  # the imports run in the background; the first run() waits for them
        return self

    def run(self, kwargs: dict) -> dict:
        """``run_freeze_spec(**kwargs)`` in a fresh child process; its result, or its error raised here."""
        if not self._ready:
            if self.proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the Freeze worker did not start; see {self.log_file}")
            self._ready = True
        self.proc.stdin.write(json.dumps(kwargs) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the Freeze worker died; see {self.log_file}")
        reply = json.loads(line)
        if reply["status"] != "ok":
            raise RuntimeError(f"the Freeze run {kwargs.get('preset')} (seed {kwargs.get('seed')}) failed:\n{reply['error']}")
        result_file = Path(reply["result"])
        result = json.loads(result_file.read_text())
        result_file.unlink()  # a hand-over file: the result lives on in the lab's results.json
        return result

    def __exit__(self, *exc):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001 - never mask the caller's error
            self.proc.kill()
        self._log.close()
        return False


def run_all(workers: list, jobs: list, done=None) -> list:
    """Every job on the first idle ``Worker`` (as many at once as there are workers); the results in the jobs'
    order. ``done()`` is called after each job (a progress bar's update)."""
    import queue
    from concurrent.futures import ThreadPoolExecutor

    idle = queue.Queue()
    for w in workers:
        idle.put(w)

    def one(job):
        w = idle.get()
        try:
            return w.run(job)
        finally:
            idle.put(w)
            if done:
                done()

    with ThreadPoolExecutor(len(workers)) as pool:  # each thread only waits on its worker's pipe
        return list(pool.map(one, jobs))


def _serve() -> None:
    """The worker's loop: one JSON job per stdin line, one JSON reply per stdout line."""
    import importlib
    import sys
    import traceback

    for name in _PRELOAD:
        importlib.import_module(name)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        job = json.loads(line)
        result_file = Path(job["out_dir"]) / "freeze_result.json"
        error_file = Path(job["out_dir"]) / "freeze_error.txt"
        Path(job["out_dir"]).mkdir(parents=True, exist_ok=True)
        pid = os.fork()
        if pid == 0:  # the run's own process
            code = 0
            try:
                _run_child(job, result_file)
            except BaseException:
                error_file.write_text(traceback.format_exc())
                code = 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) == 0 and result_file.is_file():
            reply = {"status": "ok", "result": str(result_file)}
        else:
            error = error_file.read_text() if error_file.is_file() else f"exit status {os.waitstatus_to_exitcode(status)}"
            reply = {"status": "error", "error": error}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def _run_child(job: dict, result_file: Path) -> None:
    import torch

    from sfn_merge_plugin.lab.freeze_run import run_freeze_spec

    log = open(Path(job["out_dir"]) / "train.log", "w")  # TRL's and the callback's messages
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    torch.set_num_threads(int(job.pop("threads", 2)))
    result = run_freeze_spec(**job)
    tmp = result_file.with_name(result_file.name + ".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, result_file)


if __name__ == "__main__":
    _serve()
