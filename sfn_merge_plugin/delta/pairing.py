"""Which tensors of a base and its fine-tune to compare, checked from configs and file headers only.

A pair plan is made before any weight is read, so a wrong pair (other architecture, other shapes,
a missing folder) fails in a second with a message that names the problem. Names, layers and module
kinds come from SfN's taxonomy; fused tensors become one unit per block.
"""

from __future__ import annotations

from sfn_merge_plugin.errors import SfnError

from dataclasses import dataclass, field
from typing import Optional

from sfn_merge_plugin.checkpoint import Checkpoint, CheckpointError, TensorEntry, layout_of, open_checkpoint
from sfn_merge_plugin.taxonomy import KINDS, Block, ModelLayout, TaxonomyError

# config fields that legitimately differ between a base and its fine-tune
_CONFIG_NOISE = {"_name_or_path", "architectures", "transformers_version", "torch_dtype", "dtype", "use_cache"}
_ROW_AXIS_KINDS = ("embed", "lm_head")  # vocabulary (or position) rows: a different count is compared on shared rows


class DeltaError(SfnError):
    """Two checkpoints that cannot be compared as base and fine-tune; the message says why and what to do."""


@dataclass(frozen=True)
class Unit:
    """One row of the report: a whole tensor, or one block of a fused tensor (Phi-3 qkv_proj, GPT-2 c_attn).

    Both tensors are seen as 2-D (``rows x cols``: a 1-D tensor is one row); the unit compares
    ``rows[0]:rows[1]`` x ``cols[0]:cols[1]`` of each."""

    index: int
    tensor: str  # name in the report (the fine-tune's name; "lm_head.weight" also for a tied side)
    layer: Optional[int]
    module: str  # canonical kind (the block's kind for fused tensors)
    base: TensorEntry  # what is read from the base
    tuned: TensorEntry  # what is read from the fine-tune
    rows: tuple
    cols: tuple
    block: Optional[Block] = None
    note: str = ""

    @property
    def numel(self) -> int:
        return (self.rows[1] - self.rows[0]) * (self.cols[1] - self.cols[0])

    @property
    def block_text(self) -> str:
        """Where a fused block sits in its tensor (``rows 0:896``, ``cols 0:768``, ``elements 0:768``); empty
        for whole tensors."""
        if self.block is None:
            return ""
        axis = "elements" if len(self.base.shape) == 1 else ("rows" if self.block.dim == 0 else "cols")
        return f"{axis} {self.block.start}:{self.block.stop}"

    @property
    def bytes_to_read(self) -> int:
        return self.numel * (itemsize(self.base.dtype) + itemsize(self.tuned.dtype))


@dataclass(frozen=True)
class PairPlan:
    base: Checkpoint
    tuned: Checkpoint
    architecture: str
    num_layers: int
    units: tuple
    missing: tuple = ()  # tensors of the base the fine-tune lacks (not compared)
    extra: tuple = ()  # tensors of the fine-tune the base lacks (not compared)
    notes: tuple = ()
    config_differences: tuple = field(default=())

    @property
    def bytes_to_read(self) -> int:
        return sum(u.bytes_to_read for u in self.units)


_ITEMSIZE = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "bfloat16": 2, "float16": 2, "float32": 4, "float64": 8}


def itemsize(dtype: str) -> int:
    try:
        return _ITEMSIZE[dtype]
    except KeyError:
        raise DeltaError(f"tensor dtype {dtype!r} is not a floating-point type the Delta Stethoscope reads "
                         "(bf16, fp16, fp32, fp64)") from None


def as_2d(shape) -> tuple:
    """(rows, cols) of a tensor seen as a matrix: 1-D is one row, N-D keeps its first axis."""
    if len(shape) == 0:
        return (1, 1)
    if len(shape) == 1:
        return (1, int(shape[0]))
    cols = 1
    for d in shape[1:]:
        cols *= int(d)
    return (int(shape[0]), cols)


def open_model(ref, role: str, allow_bin: bool) -> Checkpoint:
    if isinstance(ref, Checkpoint):
        return ref
    try:
        return open_checkpoint(str(ref), allow_bin=allow_bin)
    except CheckpointError as exc:
        raise CheckpointError(f"{role}: {exc}") from None


def _layout(ckpt: Checkpoint, role: str) -> ModelLayout:
    try:
        return layout_of(ckpt)
    except TaxonomyError as exc:
        raise TaxonomyError(f"{role} ({ckpt.path}): {exc}") from None


def config_differences(base: dict, tuned: dict) -> list:
    """``key: base X, fine-tune Y`` for config fields that differ (bookkeeping fields left out)."""
    keys = sorted((set(base) | set(tuned)) - _CONFIG_NOISE)
    return [f"{k}: base {base.get(k)!r}, fine-tune {tuned.get(k)!r}" for k in keys if base.get(k) != tuned.get(k)]


def _check_same_model(base: Checkpoint, tuned: Checkpoint, lb: ModelLayout, lt: ModelLayout):
    if lb.architecture != lt.architecture:
        raise DeltaError(
            f"different architectures: base {base.path} is {lb.architecture}, fine-tune {tuned.path} is "
            f"{lt.architecture}. The Delta Stethoscope compares a model with a fine-tune of it; pass the "
            "fine-tune's own base model"
        )
    if lb.num_layers != lt.num_layers:
        raise DeltaError(
            f"different depths: base {base.path} has {lb.num_layers} layers, fine-tune {tuned.path} has "
            f"{lt.num_layers}. A fine-tune keeps its base's layers; pass the fine-tune's own base model"
        )


def _sort_key(info) -> tuple:
    order = {k: i for i, k in enumerate(KINDS)}
    kinds = info.kinds
    if info.layer is None:
        group = 2 if info.module in ("final_norm", "lm_head") else 0
        return (group, 0, order.get(kinds[0], 99), info.name)
    return (1, info.layer, order.get(kinds[0], 99), info.name)


def _selected(layout: ModelLayout, modules, layers) -> Optional[dict]:
    """name -> blocks to compare (() = the whole tensor) when a selector is given, else None (everything)."""
    if modules is None and layers is None:
        return None
    from sfn_merge_plugin.selectors import select

    picked = select(layout, modules if modules is not None else "re:.", layers if layers is not None else "all")
    return {s.name: s.blocks for s in picked}


def plan_pair(base, tuned, *, modules=None, layers=None, allow_bin: bool = False) -> PairPlan:
    """Match the tensors of ``base`` and ``tuned`` (folders, hub ids or opened Checkpoints).

    ``modules``/``layers`` are SfN selectors (``"o_proj"``, ``"5-30"``) restricting what is compared.
    Raises CheckpointError/TaxonomyError/DeltaError (or SelectorError) before any weight is read."""
    b = open_model(base, "base model", allow_bin)
    t = open_model(tuned, "fine-tune", allow_bin)
    lb, lt = _layout(b, "base model"), _layout(t, "fine-tune")
    _check_same_model(b, t, lb, lt)
    wanted = _selected(lb, modules, layers)
    tuned_infos = lt.by_name()
    notes, units, shape_errors = [], [], []

    def add(info, base_entry, tuned_entry, note=""):
        (rb, cb), (rt, _) = as_2d(base_entry.shape), as_2d(tuned_entry.shape)
        if tuple(base_entry.shape) != tuple(tuned_entry.shape):
            same_tail = tuple(base_entry.shape[1:]) == tuple(tuned_entry.shape[1:]) and len(base_entry.shape) > 1
            if not (same_tail and info.module in _ROW_AXIS_KINDS):
                shape_errors.append(f"{info.name}: base {list(base_entry.shape)}, fine-tune {list(tuned_entry.shape)}")
                return
            shared = min(rb, rt)
            note = (note + "; " if note else "") + (
                f"row counts differ (base {rb}, fine-tune {rt}): compared the first {shared} rows")
            notes.append(f"{info.name}: base has {rb} rows (vocabulary/positions), fine-tune {rt}; "
                         f"statistics cover the {shared} shared rows")
            rb = rt = shared
        for blk in (blocks_of(info, wanted) or (None,)):
            rows, cols = (0, rb), (0, cb)
            if blk is not None:
                if blk.dim == 0 and len(base_entry.shape) > 1:
                    rows = (blk.start, blk.stop)
                else:
                    cols = (blk.start, blk.stop)
            units.append(Unit(len(units), info.name, info.layer, blk.kind if blk else info.module,
                              base_entry, tuned_entry, rows, cols, blk, note))

    infos = sorted(lb.tensors, key=_sort_key)
    for info in infos:
        if wanted is not None and info.name not in wanted:
            continue
        other = tuned_infos.get(info.name)
        if info.tied_to is not None:  # the base's lm_head *is* its embedding
            if other is None or other.tied_to is not None:
                notes.append(f"both models tie lm_head to their embedding ({info.tied_to}): lm_head is compared "
                             "as the embedding, not twice")
                continue
            note = f"base ties lm_head to {info.tied_to}: compared the fine-tune's lm_head with the base's embedding"
            notes.append(note)
            add(info, b.tensors[info.tied_to], t.tensors[info.name], note)
            continue
        if other is None:
            continue  # reported as missing below
        if other.tied_to is not None:  # fine-tune ties, base does not
            note = (f"the fine-tune ties lm_head to {other.tied_to}: compared the base's lm_head with the "
                    "fine-tune's embedding")
            notes.append(note)
            add(info, b.tensors[info.name], t.tensors[other.tied_to], note)
            continue
        add(info, b.tensors[info.name], t.tensors[info.name])
    if shape_errors:
        more = f" (and {len(shape_errors) - 5} more)" if len(shape_errors) > 5 else ""
        raise DeltaError(
            f"tensor shapes differ between base {b.path} and fine-tune {t.path}: {'; '.join(shape_errors[:5])}{more}. "
            "A fine-tune keeps its base's shapes (only vocabulary rows of embed/lm_head may differ); pass the "
            "fine-tune's own base model"
        )
    base_real = {i.name for i in lb.tensors if i.tied_to is None}
    tuned_real = {i.name for i in lt.tensors if i.tied_to is None}
    virtual = {i.name for i in lb.tensors if i.tied_to is not None} | {i.name for i in lt.tensors if i.tied_to is not None}
    missing = tuple(sorted(base_real - tuned_real - virtual))
    extra = tuple(sorted(tuned_real - base_real - virtual))
    if missing:
        notes.append(f"{len(missing)} tensor(s) of the base are not in the fine-tune (not compared): "
                     f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if extra:
        notes.append(f"{len(extra)} tensor(s) of the fine-tune are not in the base (not compared): "
                     f"{', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
    if not units:
        raise DeltaError(f"no tensor of base {b.path} has a counterpart in fine-tune {t.path}: nothing to compare")
    dtypes = {(u.base.dtype, u.tuned.dtype) for u in units}
    if any(x != y for x, y in dtypes):
        pairs = ", ".join(sorted(f"{x} vs {y}" for x, y in dtypes if x != y))
        notes.append(f"stored dtypes differ between the models ({pairs}): both are compared in float32 "
                     "(float64 if either is float64)")
    for u in units:
        itemsize(u.base.dtype), itemsize(u.tuned.dtype)  # non-float tensors fail here, before reading
    return PairPlan(b, t, lb.architecture, lb.num_layers, tuple(units), missing, extra, tuple(dict.fromkeys(notes)),
                    tuple(config_differences(b.config, t.config)))


def blocks_of(info, wanted: Optional[dict]) -> tuple:
    """The blocks of a fused tensor to report (all of them, or those a selector picked); () otherwise."""
    if not info.blocks:
        return ()
    if wanted is not None and wanted.get(info.name):
        return tuple(wanted[info.name])
    return tuple(info.blocks)
