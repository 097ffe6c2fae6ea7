"""What the lab runs and how big: the stage list, the paper's table rows, and one typed size per preset.

Every default of ``sfn lab`` comes from here (``--help`` and the report format these constants).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

STAGES = ("pairs", "delta", "merge", "freeze", "destruction")
# Table 1 rows: (label, sfn_swap module selector) - the paper's three swaps
SWAPS = (("o_proj", "o_proj"), ("q,k,v_proj", "qkv"), ("mlp", "mlp"))
# Table 2 rows: Freeze presets of the shipped TRL recipes (trl_configs/), in the paper's order
FREEZE_ROWS = ("emb_head", "oproj", "qkvo", "all")
DESTROY_MODULES = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
DESTROY_METHODS = "zero,reinit,remove"
PAPER_DESTROY_LAYERS = "0.08-0.48"  # the paper's blocks 5-30 of 64, as a fraction of depth
# regime thresholds on the largest relative change ||B - A|| / ||A|| of a linear module kind
SMALL_CHANGE, NEW_CIRCUIT = 0.2, 0.5
BUILT_PAIRS = ("new_circuit", "skill")  # the offline pairs the lab trains (lab.pairs.PAIRS)
CUSTOM_PAIR = "custom"  # the name of the user's --base/--reasoning pair
DEFAULT_THREADS = 2  # torch threads of a full run, whatever the caller's OMP_NUM_THREADS says


@dataclass(frozen=True)
class FreezeBudget:
    """One Freeze run's training budget (the shipped recipe supplies everything else)."""

    steps: int  # optimizer steps per run
    batch: int  # rows per step (no gradient accumulation)
    lr: float  # peak learning rate (the recipe's scheduler and warm-up shape it)


@dataclass(frozen=True)
class LabSize:
    """How big each stage of one lab run is (``SIZES[name]``, then ``for_user_models`` for --base/--reasoning)."""

    name: str  # "full" or "smoke": recorded in results.json and shown in the report
    heldout: int  # held-out chain problems every model is graded on
    probes: int  # chat probes (exact-match exchanges) of the lab's own pairs
    max_new_tokens: int  # generation budget per answer (greedy, no budget forcing)
    eval_batch: int  # prompts generated together
    freeze_seeds: int  # training seeds per Freeze row (--freeze-seeds overrides)
    freeze_pairs: tuple  # pairs the Freeze stage trains by default (--freeze-pairs overrides)
    freeze: dict  # pair name -> FreezeBudget (the user's pair is "custom")
    freeze_max_length: int  # tokens per Freeze training row
    destroy_layers: str  # sweep layers for the lab's own pairs (the user's get PAPER_DESTROY_LAYERS)
    sweep_problems: int  # graded chain problems per destroyed cell
    sweep_probes: int  # chat prompts per destroyed cell
    sweep_tokens: int  # generation budget per sweep response
    sweep_batch: int = 64  # prompts the sweep generates together
    localize_window: int = 1  # layers per cell of the Merge stage's localization map (sfn localize --window)
    localize_problems: int = 32  # chain problems graded per map cell
    localize_tokens: int = 48  # generation budget per map response
    localize_chat_prompts: int = 4  # conversation-check prompts per map cell (0: none)
    pack_ranks: tuple = (1, 4, 16, 64)  # LoRA ranks of the o_proj pack's accuracy-vs-rank curve (packs.rank_curve)
    threads: int = DEFAULT_THREADS  # torch threads (--threads overrides): part of what makes a run reproducible
    freeze_workers: int = 2  # Freeze runs trained at once, each on threads / workers (a tiny model gains nothing from a 2nd thread)
    estimate_s: dict = field(default_factory=dict)  # stage -> rough seconds on 2 CPU cores (the ETA); {}: none shown

    def for_user_models(self) -> "LabSize":
        """The user's checkpoints: real reasoning models think for hundreds of tokens."""
        if self.name == "smoke":
            return self
        return replace(self, max_new_tokens=2048, eval_batch=64, sweep_tokens=512, freeze_max_length=512,
                       freeze_workers=1)  # one billion-parameter model in memory at a time


def _sft_budget(recipe: dict, share: float = 1.0) -> FreezeBudget:
    """A Freeze budget that follows a pair's SFT recipe (``share`` of its steps, its batch and peak rate)."""
    return FreezeBudget(int(recipe["steps"] * share), recipe["batch"], recipe["lr"])


def _full() -> LabSize:
    from sfn_merge_plugin.lab.pairs import FULL as _SFT  # the offline pairs' SFT recipes: Freeze budgets follow them

    return LabSize(
        name="full", heldout=200, probes=40, max_new_tokens=48, eval_batch=256, freeze_seeds=3,
        freeze_pairs=("skill",),
        freeze={"skill": _sft_budget(_SFT["skill_sft"], share=0.5),  # half the skill SFT's steps
                "new_circuit": _sft_budget(_SFT["circuit_sft"]),  # the circuit SFT's budget
                CUSTOM_PAIR: FreezeBudget(40, 32, 1e-5)},
        freeze_max_length=128, destroy_layers="1-2", sweep_problems=8, sweep_probes=8, sweep_tokens=40)


def _smoke() -> LabSize:
    # one thread, so a busy machine cannot stall it (OpenMP threads spin-wait on each other)
    return LabSize(
        name="smoke", heldout=12, probes=5, max_new_tokens=40, eval_batch=64, freeze_seeds=2,
        freeze_pairs=("skill", "new_circuit"),
        freeze={"skill": FreezeBudget(2, 4, 3e-4), "new_circuit": FreezeBudget(2, 4, 3e-3),
                CUSTOM_PAIR: FreezeBudget(2, 4, 1e-5)},
        freeze_max_length=96, destroy_layers="1", sweep_problems=2, sweep_probes=2, sweep_tokens=12,
        localize_window=2, localize_problems=3, localize_tokens=12, localize_chat_prompts=1, pack_ranks=(1, 4),
        threads=1)


SIZES = {"full": _full(), "smoke": _smoke()}
