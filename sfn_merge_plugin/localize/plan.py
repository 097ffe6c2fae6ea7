"""What a map measures: its configuration (one typed dataclass) and its cells, resolved from checkpoint
headers before any model is loaded (a bad selector or window fails in a second, not after an hour)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from sfn_merge_plugin.errors import UsageError

DIRECTIONS = ("sufficiency", "necessity")
DEFAULT_MODULES = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,norm"


@dataclass
class MapConfig:
    """One ``sfn localize`` run."""

    base: str  # the base model folder
    tuned: str  # the fine-tune (same architecture and depth)
    task: str = "chain"  # chain | addition (the lab's tasks) | math500 | aime24 | gpqa_diamond | FILE.jsonl
    out: Optional[str] = None  # output folder (map.csv, map.json, heatmaps, summary.md); None: nothing written
    modules: str = DEFAULT_MODULES  # rows: kinds or groups, comma-separated; "q_proj+k_proj" is one row
    window: int = 4  # consecutive layers per cell (the last window of the model may be shorter)
    directions: tuple = DIRECTIONS  # sufficiency (base + tuned tensors) and/or necessity (tuned - its tensors)
    problems: int = 32  # problems graded per cell (the first N of the task)
    samples: int = 1  # 1: greedy; k > 1: k samples per problem (temperature/top_p below)
    temperature: float = 0.7  # sampling temperature when samples > 1
    top_p: float = 0.95  # nucleus sampling when samples > 1
    max_new_tokens: int = 48  # token budget per response
    chat_prompts: int = 4  # built-in sweep prompts per cell for the conversation check (0: no check)
    chat_tokens: int = 32  # token budget of a conversation-check response
    batch_size: int = 32  # prompts generated together
    bootstrap: int = 2000  # bootstrap resamples for the 95% intervals
    seed: int = 0  # chain problems, sampling and bootstrap seed
    consistency: bool = False  # also run the all-modules cell per direction (needs room for a second copy of the model)
    device: Optional[str] = None  # cpu, cuda, cuda:1 ... (None: cuda when available)
    dtype: str = "auto"  # load dtype (auto: as stored)
    force: bool = False  # replace an earlier SfN output folder
    progress: bool = True  # tqdm bars with ETA

    def check(self) -> None:
        """Every bad number fails here, with the fix, before any model is loaded."""
        for name in ("window", "problems", "samples", "max_new_tokens", "batch_size", "bootstrap"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("chat_prompts", "chat_tokens"):
            if int(getattr(self, name)) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.samples > 1 and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise UsageError(f"sampling needs temperature > 0 and 0 < top_p <= 1 (got {self.temperature}, {self.top_p})")
        bad = [d for d in self.directions if d not in DIRECTIONS]
        if bad or not self.directions:
            raise UsageError(f"directions {', '.join(bad) or 'none'}: choose from {', '.join(DIRECTIONS)}")


@dataclass(frozen=True)
class Cell:
    """One measurement: ``direction`` applied to the tensors of ``row`` in ``layers``."""

    direction: str  # sufficiency | necessity
    row: str  # the module row as written ("o_proj", "q_proj+k_proj"); "none"/"all" for the two ends
    layers: str  # "0-3"; "all" for the ends
    names: tuple = field(default=(), compare=False)  # the selected tensor names
    selected: tuple = field(default=(), compare=False, repr=False)  # selectors.Selected

    @property
    def label(self) -> str:
        return f"{self.direction}:{self.row}@{self.layers}"


def windows(num_layers: int, window: int) -> list:
    """Consecutive layer windows "0-3", "4-7", ... covering every layer once."""
    out = []
    for start in range(0, num_layers, window):
        stop = min(start + window, num_layers) - 1
        out.append(str(start) if stop == start else f"{start}-{stop}")
    return out


def module_rows(modules: str) -> list:
    from sfn_merge_plugin.sweep.runner import split_rows

    return split_rows(modules)


def plan_cells(layout, config: MapConfig) -> dict:
    """direction -> [Cell]: the two ends ("none": nothing changed; "all" only with ``consistency``) then every
    (row, window). A row that matches nothing in a window (e.g. no norm there) is an error."""
    from sfn_merge_plugin.selectors import SelectorError, select

    rows = module_rows(config.modules)
    if config.window > layout.num_layers:
        raise UsageError(f"--window {config.window} is larger than the model's {layout.num_layers} layers")
    everything = tuple(select(layout, "re:."))
    plan = {}
    for direction in config.directions:
        cells = [Cell(direction, "none", "all")]
        if config.consistency:
            cells.append(Cell(direction, "all", "all", tuple(s.name for s in everything), everything))
        for layers in windows(layout.num_layers, config.window):
            for row in rows:
                spec = row if row.startswith("re:") else row.replace("+", ",")
                try:
                    chosen = tuple(s for s in select(layout, spec, layers) if s.layer is not None)
                except SelectorError as exc:
                    raise SelectorError(f"row {row!r}, layers {layers}: {exc}") from None
                cells.append(Cell(direction, row, layers, tuple(s.name for s in chosen), chosen))
        plan[direction] = cells
    return plan
