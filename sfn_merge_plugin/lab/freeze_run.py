"""One Freeze run of the lab: a shipped TRL recipe (``trl_configs/``), scaled down, trained in-process.

The recipe goes through ``freeze.configs.scaled_recipe`` and TRL's own ``trl sft`` parser, so what runs is
the shipped configuration with only size, data, learning rate and precision overridden; the selection
is its ``model_init_kwargs: {sfn_trainable: ...}``, applied by SfN's TRL hook (``FreezeCallback``). The
run then reports accuracy, trainable parameters, steps/s, peak memory and its loss curve, and checks
that exactly the selected tensors moved.
"""

from __future__ import annotations

import json
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
