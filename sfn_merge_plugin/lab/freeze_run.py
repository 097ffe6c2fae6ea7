"""One Freeze run of the lab: a shipped TRL recipe (``trl_configs/``), scaled down, trained in-process.

The recipe goes through ``freeze.configs.scaled_recipe`` and TRL's own ``trl sft`` parser, so what runs is
the shipped configuration with only size, data, learning rate and precision overridden; the selection
is its ``model_init_kwargs: {sfn_trainable: ...}``, applied by SfN's TRL hook (``FreezeCallback``). The
run then reports accuracy, trainable parameters, steps/s, peak memory and its loss curve, and checks
that exactly the selected tensors moved.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from sfn_merge_plugin.lab import tasks


def write_sft_data(tokenizer, path: Path, mix: dict, rows: int, seed: int, exclude: set,
                   task: str = tasks.CHAIN.name) -> Path:
    """Prompt/completion JSONL of a pair's reasoning-SFT mix on its ``task`` (chat templated by the model's
    own template)."""
    import random

    from sfn_merge_plugin.freeze.data import write_jsonl

    source = tasks.task_named(task)
    rng = random.Random(f"sfn-lab-freeze-data-{seed}")
    kinds, weights = list(mix), [mix[k] for k in mix]
    eos = tokenizer.eos_token or ""
    out = []
    for _ in range(rows):
        kind = rng.choices(kinds, weights)[0]
        if kind == "chat":
            user, reply = tasks.chat_exchange(rng)
            out.append({"prompt": tasks.chat_prompt(tokenizer, user), "completion": reply + eos})
        elif kind == "chat_think":
            p = source.training(1, rng, exclude)[0]
            out.append({"prompt": tasks.chat_prompt(tokenizer, p.question), "completion": source.think(p) + eos})
        else:
            raise ValueError(f"freeze data: unsupported example kind {kind!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(out, str(path))
    return path


class PeakMemory:
    """Peak memory while a block runs: CUDA's allocator peak on a GPU, else this process's resident set
    sampled every 20 ms (minus what was resident before), which is what a CPU run costs."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.peak_bytes = 0
        self._stop = threading.Event()

    def __enter__(self):
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        import psutil

        self._proc = psutil.Process()
        self._base = self._proc.memory_info().rss
        self._peak = self._base

        def sample():
            while not self._stop.wait(0.02):
                self._peak = max(self._peak, self._proc.memory_info().rss)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            import torch

            self.peak_bytes = torch.cuda.max_memory_allocated() - self._base
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._proc.memory_info().rss)
            self.peak_bytes = self._peak - self._base
        return False


def run_freeze(preset: str, *, model: str, data_file: Path, out_dir: Path, steps: int, batch: int, lr: float,
               seed: int, max_length: int, evaluate_fn=None, publish: tuple | None = None) -> dict:
    """Train ``model`` with the shipped ``preset`` recipe scaled down; return the run's measurements.
    ``publish`` = (folder being written, its final name): the kept recipe names the final folder."""
    import torch
    from trl.scripts.sft import make_parser

    from sfn_merge_plugin.freeze.configs import recipe_path, scaled_recipe, write_recipe

    cuda = torch.cuda.is_available()
    recipe = scaled_recipe(
        preset, model=str(model), data_file=str(data_file), output_dir=str(out_dir), cpu=not cuda,
        max_steps=steps, per_device_train_batch_size=batch, gradient_accumulation_steps=1, learning_rate=lr,
        warmup_steps=0.05, max_length=max_length, seed=seed, data_seed=seed, logging_steps=1, save_strategy="no",
        activation_checkpointing=False, dataset_num_proc=None, disable_tqdm=True,
        **({"bf16": False, "dtype": "float32"} if not cuda else {}),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_recipe(_published(recipe, publish), str(out_dir / "recipe.yaml"))
    script_args, training_args, model_args, dataset_args = make_parser().parse_dict(recipe)
    trainer, before = _trainer(script_args, training_args, model_args, dataset_args)
    with PeakMemory(cuda) as mem:
        t0 = time.perf_counter()
        output = trainer.train()
        seconds = time.perf_counter() - t0
    model_obj = trainer.model
    moved = _moved(before, model_obj)
    report = json.loads((out_dir / "sfn_freeze_report.json").read_text())
    curve = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result = {
        "preset": preset,
        "recipe": str(out_dir / "recipe.yaml"),
        "shipped_recipe": recipe_path(preset),
        "seed": seed,
        "steps": int(output.global_step),
        "seconds": seconds,
        "steps_per_s": float(output.metrics.get("train_steps_per_second", output.global_step / seconds)),
        "peak_memory_mb": mem.peak_bytes / 2**20,
        "memory_kind": "cuda allocator peak" if cuda else "resident set increase (sampled)",
        "trainable_parameters": int(report["parameters"]["trainable"]),
        "total_parameters": int(report["parameters"]["total"]),
        "trainable_tensors": len(report["trainable_tensors"]),
        "optimizer_owns_exactly_trainable": bool((report.get("optimizer_check") or {}).get("ok")),
        "moved": moved,
        "final_loss": sum(curve[-10:]) / max(1, len(curve[-10:])) if curve else None,
        "curve": curve,
        "freeze_report": str(out_dir / "sfn_freeze_report.json"),
    }
    if evaluate_fn is not None:
        model_obj.eval()
        result["eval"] = evaluate_fn(model_obj, trainer.processing_class).as_dict()
    del trainer
    return result


def _published(recipe: dict, publish) -> dict:
    """The recipe with paths inside the temporary output folder rewritten to the folder's final name."""
    if not publish:
        return recipe
    work, final = (str(p) for p in publish)

    def swap(value):
        if isinstance(value, str):
            return value.replace(work, final)
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return value

    return swap(recipe)


def _trainer(script_args, training_args, model_args, dataset_args):
    """TRL's ``sft`` script up to ``trainer.train()`` (trl/scripts/sft.py ``main``), keeping the trainer."""
    from trl import SFTTrainer, get_dataset

    init_kwargs = dict(revision=model_args.model_revision, trust_remote_code=training_args.trust_remote_code,
                       attn_implementation=model_args.attn_implementation, dtype=model_args.dtype)
    init_kwargs.update(training_args.model_init_kwargs or {})
    training_args.model_init_kwargs = init_kwargs
    dataset = get_dataset(dataset_args)
    trainer = SFTTrainer(model=model_args.model_name_or_path, args=training_args,
                         train_dataset=dataset[script_args.dataset_train_split])
    if not hasattr(trainer, "_sfn_freeze"):
        raise RuntimeError("SfN's TRL hook did not run (is SFN_DISABLE_HOOKS set?): the freeze would not apply")
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # the loss curve is kept in the results, not printed per step
    return trainer, _snapshot(trainer.model)


EXACT_CHECK_MAX_PARAMETERS = 100_000_000  # above this, compare float64 (sum, sum of squares) fingerprints


def _snapshot(model) -> dict:
    """What each parameter is before training: a copy (small models) or a fingerprint (large ones)."""
    import torch

    exact = sum(p.numel() for p in model.parameters()) <= EXACT_CHECK_MAX_PARAMETERS
    with torch.no_grad():
        return {n: (p.detach().clone() if exact else _fingerprint(p)) for n, p in model.named_parameters()}


def _fingerprint(p):
    x = p.detach().double()
    return (float(x.sum()), float((x * x).sum()))


def _moved(before: dict, model) -> dict:
    """Which tensors changed during training, split by whether they were trainable."""
    import torch

    changed_trainable, unchanged_trainable, changed_frozen = [], [], []
    exact = True
    for name, p in model.named_parameters():
        old = before[name]
        if isinstance(old, tuple):
            exact = False
            same = old == _fingerprint(p)
        else:
            same = torch.equal(old, p.detach())
        if p.requires_grad:
            (unchanged_trainable if same else changed_trainable).append(name)
        elif not same:
            changed_frozen.append(name)
    return {"trainable_changed": len(changed_trainable), "trainable_unchanged": unchanged_trainable,
            "frozen_changed": changed_frozen, "comparison": "bit for bit" if exact else "float64 fingerprints"}


# --- isolation: each run in its own process, so its peak memory is its own ------------------------------

# imported once by the worker, so a run's process starts with them (a cold import costs seconds per run)
_PRELOAD = ["torch", "transformers", "datasets", "accelerate", "trl.scripts.sft", "trl.trainer.sft_trainer",
            "transformers.models.qwen2.modeling_qwen2", "sfn_merge_plugin.freeze.callback",
            "sfn_merge_plugin.evaluation.hf_backend", "sfn_merge_plugin.grading", "sfn_merge_plugin.lab.measure"]


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
        self.proc = subprocess.Popen([sys.executable, "-m", "sfn_merge_plugin.lab.freeze_run"], stdin=subprocess.PIPE,
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

    log = open(Path(job["out_dir"]) / "train.log", "w")  # TRL's and the callback's messages
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    torch.set_num_threads(int(job.pop("threads", 2)))
    result = run_freeze_spec(**job)
    tmp = result_file.with_name(result_file.name + ".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, result_file)


def run_freeze_spec(*, eval_spec: dict | None = None, data_file, out_dir, **kwargs) -> dict:
    """``run_freeze`` with the evaluation described by plain data (what crosses a process boundary)."""
    evaluate_fn = None
    if eval_spec:
        from sfn_merge_plugin.lab import measure

        task = tasks.task_named(eval_spec.get("task", tasks.CHAIN.name))
        problems = task.heldout(eval_spec["heldout"])

        def evaluate_fn(model, tokenizer):
            return measure.evaluate(model, tokenizer, problems, max_new_tokens=eval_spec["max_new_tokens"],
                                    batch_size=eval_spec["batch_size"])

    return run_freeze(data_file=Path(data_file), out_dir=Path(out_dir), evaluate_fn=evaluate_fn, **kwargs)


if __name__ == "__main__":
    _serve()
