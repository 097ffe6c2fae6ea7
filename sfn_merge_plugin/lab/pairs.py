"""Train the lab's two offline base/reasoning pairs on a CPU: deterministic given a seed, cached, loss-checked.

"new circuit" (negative control): a base pretrained on chat and direct answers; its reasoning model is a
long high-lr SFT on worked traces, which builds the computation from scratch and rewrites every matrix.
"skill already there" (the paper's regime): the base also pretrains on plain-text worked traces, so it
can compute; a short low-lr SFT only teaches it WHEN to reason (chat -> ``<think>`` ... ``\\boxed{}``).
Both pairs share the first pretraining stage. Every stage checks its final loss per example kind; a
stage may stop early once it passes, and one that misses gets a few more cosine cycles at a lower rate
(the trace circuit forms suddenly, after a seed-dependent number of steps). Every stage is cached under
a key hashing its recipe, its ancestors' recipes and the seed, so a second run loads instead of training.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from sfn_merge_plugin.lab import tasks
from sfn_merge_plugin.lab.training import final_losses, fresh_model, train

CACHE_VERSION = 3  # bump when training code changes what a recipe produces (3: the key holds the platform)

MODEL = dict(layers=4, hidden=128, heads=4, kv_heads=2, intermediate=512, vocab=384)

# stage -> recipe; "parent" names the stage it starts from (None: a fresh random model)
FULL = {
    "model": MODEL,
    "pretrain": dict(parent=None, steps=600, batch=64, lr=3e-3, warmup=30,
                     mix={"chat": 0.3, "chat_direct": 0.7}, check={"chat": 0.05},
                     extend=dict(steps=150, lr_scale=0.5, max=2)),
    "circuit_sft": dict(parent="pretrain", steps=1000, batch=16, lr=3e-3, warmup=30,
                        mix={"chat_think": 0.9, "chat": 0.1}, check={"chat_think": 1e-3, "chat": 0.2},
                        early_stop=True, extend=dict(steps=300, lr_scale=0.5, max=2)),
    "skill_pretrain": dict(parent="pretrain", steps=600, batch=32, lr=3e-3, warmup=30,
                           mix={"plain_think": 0.65, "chat_direct": 0.2, "chat": 0.15},
                           check={"plain_think": 1e-3, "chat": 0.2}, early_stop=True,
                           extend=dict(steps=300, lr_scale=0.5, max=3)),
    "skill_sft": dict(parent="skill_pretrain", steps=80, batch=32, lr=3e-4, warmup=10,
                      mix={"chat_think": 0.8, "chat": 0.2}, check={"chat_think": 1e-3, "chat": 0.2},
                      extend=dict(steps=40, lr_scale=1.0, max=2)),
}

# the --smoke size: the same stages on a 2-layer model for a few steps (checks the plumbing, not the science;
# its loss checks fail by design, and the report says the pairs are not trusted)
SMOKE = {
    "model": dict(layers=2, hidden=32, heads=2, kv_heads=1, intermediate=64, vocab=384),
    "pretrain": dict(FULL["pretrain"], steps=6, batch=8, warmup=2, extend=None),
    "circuit_sft": dict(FULL["circuit_sft"], steps=4, batch=8, warmup=1, extend=None),
    "skill_pretrain": dict(FULL["skill_pretrain"], steps=6, batch=8, warmup=2, extend=None),
    "skill_sft": dict(FULL["skill_sft"], steps=3, batch=8, warmup=1, extend=None),
}

# the pairs: name -> (base stage, reasoning stage, what the regime is meant to be)
PAIRS = {
    "new_circuit": ("pretrain", "circuit_sft", "new circuit: the fine-tune builds the computation (negative control)"),
    "skill": ("skill_pretrain", "skill_sft", "skill already there: the fine-tune teaches when to reason (the paper's regime)"),
}


@dataclass
class StageResult:
    name: str
    path: str  # model folder
    key: str
    recipe: dict
    losses: dict  # kind -> [per-step mean loss]
    final_loss: dict  # kind -> mean of the last steps
    check: dict  # kind -> (final loss, threshold, ok)
    seconds: float
    steps_per_s: float
    cached: bool = False
    rounds: list = field(default_factory=list)  # steps of the main run, then of each extension

    @property
    def ok(self) -> bool:
        return all(v[2] for v in self.check.values())


@dataclass
class Pair:
    name: str
    base: StageResult
    reasoning: StageResult
    description: str
    base_lineage: list = field(default_factory=list)  # [StageResult.name...] that made the base

    @property
    def trusted(self) -> bool:
        return self.base.ok and self.reasoning.ok


def compute_platform(threads: int | None = None) -> dict:
    """What a trained model's bits depend on besides its recipe and seed: torch's version, its CPU kernel
    path (AVX2 / AVX-512 ...) and the thread count (default: torch's now). A cache trained on another
    platform is not reused."""
    import torch

    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - older torch
        capability = None
    return {"torch": torch.__version__, "cpu_capability": capability, "threads": threads or torch.get_num_threads()}


def stage_key(recipes: dict, stage: str, seed: int, threads: int | None = None) -> str:
    """Hash of the stage's recipe, its ancestors' recipes, the model shape, the seed, the code version and
    the compute platform (``compute_platform(threads)``)."""
    chain, s = [], stage
    while s is not None:
        chain.append((s, recipes[s]))
        s = recipes[s]["parent"]
    blob = json.dumps({"v": CACHE_VERSION, "model": recipes["model"], "seed": seed, "chain": chain,
                       "platform": compute_platform(threads)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --- data ---------------------------------------------------------------------------------------

def _example(kind: str, rng: random.Random, tokenizer, exclude: set, task: tasks.Task = tasks.CHAIN):
    """(prompt text, completion text) of one training example of ``kind`` on ``task``."""
    if kind == "chat":
        user, reply = tasks.chat_exchange(rng)
        return tasks.chat_prompt(tokenizer, user), reply + "<|im_end|>"
    p = task.training(1, rng, exclude)[0]
    if kind == "chat_direct":
        return tasks.chat_prompt(tokenizer, p.question), task.direct(p) + "<|im_end|>"
    if kind == "chat_think":
        return tasks.chat_prompt(tokenizer, p.question), task.think(p) + "<|im_end|>"
    if kind == "plain_think":
        return tasks.plain_prompt(tokenizer, p), task.think(p) + "<|endoftext|>"
    raise ValueError(f"unknown example kind {kind!r}")


def training_batches(tokenizer, recipe: dict, seed: int, exclude: set):
    """Every batch of a stage, built up front: (input_ids, labels, kind index per row), right-padded. The
    recipe's ``task`` (default ``chain``) names the problems (``tasks.task_named``)."""
    import torch

    task = tasks.task_named(recipe.get("task", tasks.CHAIN.name))
    rng = random.Random(f"sfn-lab-data-{seed}")
    kinds = list(recipe["mix"])
    weights = [recipe["mix"][k] for k in kinds]
    pad = tokenizer.pad_token_id
    sep = {}
    batches = []
    for _ in range(recipe["steps"]):
        rows, row_kinds = [], []
        for _ in range(recipe["batch"]):
            k = rng.choices(range(len(kinds)), weights)[0]
            prompt, completion = _example(kinds[k], rng, tokenizer, exclude, task)
            p_ids = sep.get(prompt)
            if p_ids is None:
                p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
                if len(sep) < 4096:
                    sep[prompt] = p_ids
            c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
            rows.append((p_ids, c_ids))
            row_kinds.append(k)
        width = max(len(p) + len(c) for p, c in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (p, c) in enumerate(rows):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            labels[i, len(p): len(p) + len(c)] = torch.tensor(c)
        batches.append((ids, labels, torch.tensor(row_kinds)))
    return kinds, batches


def _save(model, tokenizer, path: Path, meta: dict) -> None:
    """Write a model folder under a temporary name, then rename: a crash leaves no half-written stage."""
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "sfn_lab_stage.json").write_text(json.dumps(meta, indent=1))
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def stage_path(stage: str, recipes: dict, seed: int, cache_dir: Path, threads: int | None = None) -> Path:
    """Where the stage's model is cached (``threads``: the torch threads it trains with, default torch's now)."""
    return Path(cache_dir) / f"{stage}-{stage_key(recipes, stage, seed, threads)}"


def run_stage(stage: str, recipes: dict, seed: int, cache_dir: Path, tokenizer, exclude: set,
              parents: dict, progress: bool = True, position: int | None = None) -> StageResult:
    """Train one stage (or load it from the cache) and check its final loss against the recipe
    (``position``: the line of its progress bar, when several stages train at once)."""
    import torch
    from transformers import AutoModelForCausalLM

    recipe = recipes[stage]
    path = stage_path(stage, recipes, seed, cache_dir)
    key = path.name[len(stage) + 1:]
    meta_file = path / "sfn_lab_stage.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        return _result(stage, path, key, recipe, meta, cached=True)
    if recipe["parent"] is None:
        model = fresh_model(recipes["model"], seed)
    else:
        model = AutoModelForCausalLM.from_pretrained(parents[recipe["parent"]].path, dtype=torch.float32)
    stop = {k: thr / 2 for k, thr in recipe.get("check", {}).items()} if recipe.get("early_stop") else None
    t0 = time.perf_counter()
    kinds, batches = training_batches(tokenizer, recipe, seed + _stage_offset(stage), exclude)
    curves = train(model, kinds, batches, recipe, seed, desc=f"{stage} (seed {seed})", progress=progress, stop=stop,
                   position=position)
    rounds = [len(next(iter(curves.values())))]  # steps actually run (early stop)
    extend = recipe.get("extend")
    while extend and len(rounds) <= extend["max"] and not _passes(curves, recipe):
        # the loss check failed: another cosine cycle at a lower rate, on new data (deterministic)
        more = dict(recipe, steps=extend["steps"], lr=recipe["lr"] * extend["lr_scale"] ** len(rounds),
                    warmup=min(recipe["warmup"], extend["steps"] // 10), schedule="cosine")
        kinds, batches = training_batches(tokenizer, more, seed + _stage_offset(stage) + len(rounds), exclude)
        extra = train(model, kinds, batches, more, seed + len(rounds), desc=f"{stage} (seed {seed}, extension {len(rounds)})",
                      progress=progress, stop=stop, position=position)
        rounds.append(len(next(iter(extra.values()))))
        for k in curves:
            curves[k] += extra[k]
    seconds = time.perf_counter() - t0
    meta = {"stage": stage, "key": key, "seed": seed, "recipe": recipe, "curves": curves, "seconds": seconds,
            "rounds": rounds, "parent": parents[recipe["parent"]].path if recipe["parent"] else None,
            "torch_threads": torch.get_num_threads()}
    _save(model, tokenizer, path, meta)
    return _result(stage, path, key, recipe, meta, cached=False)


def _passes(curves: dict, recipe: dict) -> bool:
    final = final_losses(curves)
    return all(final.get(k) is not None and final[k] <= thr for k, thr in recipe.get("check", {}).items())


def _stage_offset(stage: str) -> int:
    return int(hashlib.sha256(stage.encode()).hexdigest()[:6], 16)


def _result(stage, path, key, recipe, meta, cached) -> StageResult:
    final = final_losses(meta["curves"])
    check = {k: (final.get(k), thr, final.get(k) is not None and final[k] <= thr) for k, thr in recipe.get("check", {}).items()}
    steps = sum(meta.get("rounds") or [recipe["steps"]])
    return StageResult(stage, str(path), key, recipe, meta["curves"], final, check, meta["seconds"],
                       steps / max(meta["seconds"], 1e-9), cached, list(meta.get("rounds") or [recipe["steps"]]))


def lineage(recipes: dict, stage: str) -> list:
    """The stages a model went through, first to last (``skill_sft`` -> pretrain, skill_pretrain, skill_sft)."""
    chain = []
    while stage is not None:
        chain.append(stage)
        stage = recipes[stage]["parent"]
    return chain[::-1]


def training_record(pair: Pair, points: int = 200) -> dict:
    """What the report shows about how a pair was made: each stage's recipe, time, final losses, checks and a
    loss curve thinned to ``points`` values per example kind."""
    def record(r: StageResult) -> dict:
        stride = max(1, len(next(iter(r.losses.values()), [])) // points)
        return {"stage": r.name, "key": r.key, "path": r.path, "cached": r.cached, "seconds": r.seconds,
                "rounds": r.rounds,
                "steps_per_s": r.steps_per_s, "recipe": r.recipe, "final_loss": r.final_loss,
                "check": {k: {"loss": v[0], "max": v[1], "ok": v[2]} for k, v in r.check.items()}, "ok": r.ok,
                "curve_stride": stride, "curves": {k: c[::stride] for k, c in r.losses.items()}}

    return {"base": record(pair.base), "reasoning": record(pair.reasoning), "base_lineage": pair.base_lineage,
            "trusted": pair.trusted}


def build_pairs(cache_dir, seed: int = 0, recipes: dict = FULL, progress: bool = True, heldout: int = 200) -> dict:
    """Train (or load) every stage and return {pair name: Pair}. Held-out problems never enter training."""
    from sfn_merge_plugin.tiny_tokenizer import build_tokenizer

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    exclude = {p.question for p in tasks.heldout_problems(heldout, seed=0)}
    from sfn_merge_plugin.lab.branches import train_branches

    done = {"pretrain": run_stage("pretrain", recipes, seed, cache_dir, tokenizer, exclude, {}, progress)}
    done.update(train_branches(recipes, "pretrain", done["pretrain"], seed, cache_dir, exclude, progress))
    return {name: Pair(name, done[b], done[r], desc, lineage(recipes, b)) for name, (b, r, desc) in PAIRS.items()}
