"""Base + fine-tune -> a PEFT LoRA adapter: a truncated SVD of each selected module's delta.

For a module with delta D = W_tuned - W_base (computed in float32), D = U S V^T; rank r keeps the r
largest singular values, ``kept_energy = sum(S[:r]^2) / sum(S^2)`` (the share of ||D||_F^2 kept), and
the adapter stores ``lora_B = U_r sqrt(S_r)``, ``lora_A = sqrt(S_r) V_r^T`` with ``lora_alpha = r`` (scale
1), so base + adapter = W_base + U_r S_r V_r^T. ``--rank R`` keeps R everywhere; ``--energy E`` the
smallest rank per module that keeps at least E (then ``rank_pattern`` / ``alpha_pattern`` say each).

Only linear projections (q/k/v/o, gate/up/down) are low-rank modules. Norms, and embeddings / head of an
untied model, go into PEFT's ``modules_to_save`` (whole tensors, exact; vLLM's multi-LoRA does not serve
these: extract o_proj alone for vLLM); a changed projection bias rides along as ``lora_B.bias``
(``lora_bias: true``). Refused, with a message: fused tensors (Phi-3 qkv_proj, GPT-2 c_attn), and the
embedding or head of a tied model (PEFT cannot save one without the other).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from sfn_merge_plugin.packs.manifest import ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST, PackError

LOW_RANK_KINDS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PEFT_PREFIX = "base_model.model."  # PEFT's key prefix for a causal LM


@dataclass
class ModuleReport:
    """One row of the LoRA report."""

    module: str  # module name ("model.layers.3.self_attn.o_proj"), or the tensor for modules_to_save
    shape: list  # [out, in] of the weight
    rank: Optional[int]  # None for modules_to_save
    kept_energy: float  # share of ||delta||_F^2 kept (1.0 for modules_to_save: stored whole)
    delta_norm: float  # ||delta||_F (float32)
    params: int  # values the adapter stores for this module
    bytes: int  # adapter bytes for this module


def choose_rank(s, rank: Optional[int], energy: Optional[float]) -> int:
    """The rank to keep from singular values ``s`` (descending): ``rank``, or the smallest with >= ``energy``."""
    import torch

    if rank is not None:
        return int(rank)
    e = (s.double() ** 2)
    total = float(e.sum())
    if total == 0.0:
        return 1
    cum = torch.cumsum(e, 0) / total
    return int(torch.searchsorted(cum, torch.tensor(energy, dtype=cum.dtype) - 1e-12).item()) + 1


def kept(s, r: int) -> float:
    e = s.double() ** 2
    total = float(e.sum())
    return 1.0 if total == 0.0 else float(e[:r].sum() / total)


def low_rank(delta, rank: Optional[int] = None, energy: Optional[float] = None):
    """(A [r, in], B [out, r], kept_energy) of a float32 delta."""
    import torch

    U, S, Vh = torch.linalg.svd(delta, full_matrices=False)
    r = choose_rank(S, rank, energy)
    root = S[:r].sqrt()
    return (root[:, None] * Vh[:r]).contiguous(), (U[:, :r] * root[None, :]).contiguous(), kept(S, r)


def _split(plan, layout):
    """(low-rank weights, their changed biases, modules_to_save tensors) of a plan; refuses what cannot be LoRA."""
    infos = layout.by_name()
    weights, biases, whole = [], [], []
    for name, s in plan.selected.items():
        info = infos[name]
        if s.blocks or info.blocks:
            raise PackError(f"{name} is a fused tensor ({info.module}); a LoRA pack needs one linear module per tensor: "
                            "extract an exact pack for it (sfn pack extract without --rank/--energy)")
        if layout.architecture == "GPT2LMHeadModel" and info.module in LOW_RANK_KINDS:
            raise PackError("GPT-2 stores projections as Conv1D ([in, out]); LoRA packs support the Llama-family "
                            "layouts: extract an exact pack instead")
        if info.module in LOW_RANK_KINDS:
            (biases if name.endswith(".bias") else weights).append(name)
        elif info.module in ("embed", "lm_head") and layout.tied_embeddings:
            raise PackError(f"{name}: this base ties lm_head to its embedding, and a PEFT adapter cannot replace one "
                            "without the other; select only linear modules (and norms) for a LoRA pack, or extract an "
                            "exact pack, which unties them as sfn_swap does")
        else:
            whole.append(name)
    return weights, biases, whole


def check_ranks(plan, weights, rank):
    """A fixed rank must fit every module: one line naming the first that is too small."""
    for name in weights:
        out_dim, in_dim = plan.base.tensors[name].shape
        if rank > min(out_dim, in_dim):
            raise PackError(f"--rank {rank} is larger than {name} ({out_dim} x {in_dim}), whose largest rank is "
                            f"{min(out_dim, in_dim)}; choose --rank <= {min(out_dim, in_dim)} or --energy")


def extract_lora(base: str, tuned: str, out: str, modules: str, layers: str = "all", rank: Optional[int] = None,
                 energy: Optional[float] = None, dtype: Optional[str] = None, force: bool = False,
                 progress: bool = True) -> list:
    """Write a PEFT LoRA adapter (+ SfN manifest) to ``out``; returns a ModuleReport per module."""
    import torch
    from tqdm.auto import tqdm

    from sfn_merge_plugin.checkpoint import layout_of, resolve_path
    from sfn_merge_plugin.outputs import atomic_write_json, check_output_folder, staged_folder
    from sfn_merge_plugin.packs.extract import base_tensors, manifest_for, swap_plan
    from sfn_merge_plugin.tensor_io import DTYPES, SafetensorsReader, write_safetensors

    if (rank is None) == (energy is None):
        raise PackError("give one of --rank R or --energy E for a LoRA pack")
    if rank is not None and (not isinstance(rank, int) or rank < 1):
        raise PackError(f"--rank {rank!r}: expected a whole number >= 1")
    if energy is not None and not (0.0 < energy <= 1.0):
        raise PackError(f"--energy {energy!r}: expected a share of the squared Frobenius norm in (0, 1], e.g. 0.9")
    check_output_folder(out, force=force)
    plan = swap_plan(resolve_path(base), resolve_path(tuned), modules, layers)
    layout = layout_of(plan.base)
    weights, biases, whole = _split(plan, layout)
    if not weights and not whole:
        raise PackError(f"modules {modules!r} select no tensor a LoRA pack can hold")
    if rank is not None:
        check_ranks(plan, weights, rank)
    out_dtype = DTYPES[dtype] if dtype else None
    readers = {}

    def read(ckpt, name):
        e = ckpt.tensors[name]
        r = readers.get(e.file) or readers.setdefault(e.file, SafetensorsReader(e.file))
        return r.get_tensor(name)

    tensors, reports, ranks = {}, [], {}
    lora_bias = False
    bias_of = {n[: -len(".bias")]: n for n in biases}
    try:
        for name in tqdm(weights, desc="svd", unit="module", disable=not progress, leave=False):
            module = name[: -len(".weight")]
            wb = read(plan.base, name)
            delta = read(plan.donor, name).float() - wb.float()
            A, B, share = low_rank(delta, rank, energy)
            target = out_dtype or wb.dtype
            key = PEFT_PREFIX + module
            tensors[key + ".lora_A.weight"] = A.to(target)
            tensors[key + ".lora_B.weight"] = B.to(target)
            ranks[module] = A.shape[0]
            n = A.numel() + B.numel()
            if module in bias_of:
                db = read(plan.donor, bias_of[module]).float() - read(plan.base, bias_of[module]).float()
                tensors[key + ".lora_B.bias"] = db.to(target)
                lora_bias = True
                n += db.numel()
            reports.append(ModuleReport(module, list(wb.shape), A.shape[0], share, float(delta.norm()), n,
                                        n * torch.empty((), dtype=target).element_size()))
        for name in whole:
            t = read(plan.donor, name)
            tensors[PEFT_PREFIX + name] = t
            reports.append(ModuleReport(name, list(t.shape), None,
                                        1.0, float((t.float() - read(plan.base, name).float()).norm()), t.numel(),
                                        t.numel() * t.element_size()))
    finally:
        for r in readers.values():
            r.close()
    r_max = max(ranks.values(), default=1)
    config = peft_config(str(base), sorted(ranks), ranks, r_max, uniform=rank is not None, lora_bias=lora_bias,
                         modules_to_save=list(dict.fromkeys(n.rsplit(".", 1)[0] for n in whole)))
    manifest = manifest_for(plan, "lora", base, tuned, base_tensors(plan, weights + biases + whole, progress))
    by_module = {r.module: r for r in reports}
    for t in manifest.tensors:
        r = by_module.get(t.name.rsplit(".", 1)[0])
        if r is not None and r.rank is not None:
            t.rank, t.kept_energy = r.rank, r.kept_energy
    with staged_folder(out, "pack extract", force=force, check=False) as tmp:
        write_safetensors(tensors, str(Path(tmp) / ADAPTER_WEIGHTS), metadata={"format": "pt", "sfn_pack": "lora"})
        atomic_write_json(Path(tmp) / ADAPTER_CONFIG, config)
        atomic_write_json(Path(tmp) / MANIFEST, manifest.as_dict())
        atomic_write_json(Path(tmp) / "lora_report.json", {"rank": rank, "energy": energy,
                                                            "modules": [asdict(r) for r in reports]})
        (Path(tmp) / "README.md").write_text(_card(manifest, reports, rank, energy), encoding="utf-8")
    return reports


def peft_config(base: str, targets: list, ranks: dict, r: int, uniform: bool, lora_bias: bool,
                modules_to_save: list) -> dict:
    """A PEFT LoraConfig as JSON (PEFT fills the fields it leaves out with their defaults)."""
    pattern = {} if uniform else {m: k for m, k in ranks.items() if k != r}
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base, "revision": None,
        "r": r, "lora_alpha": r, "rank_pattern": pattern, "alpha_pattern": dict(pattern),  # alpha = r: scale 1
        "target_modules": targets, "modules_to_save": modules_to_save or None, "lora_dropout": 0.0,
        "bias": "none", "lora_bias": lora_bias, "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
        "init_lora_weights": True, "inference_mode": True,
    }


def report_table(reports: list) -> str:
    """The per-module kept energy and size, as Markdown."""
    lines = ["| module | shape | rank | kept energy | adapter params | adapter MiB |", "|---|---|---:|---:|---:|---:|"]
    for r in reports:
        lines.append(f"| {r.module} | {'x'.join(map(str, r.shape))} | {r.rank if r.rank is not None else 'whole'} | "
                     f"{r.kept_energy:.4f} | {r.params:,} | {r.bytes / 2**20:.3f} |")
    total = sum(r.bytes for r in reports)
    lines.append(f"| total | | | | {sum(r.params for r in reports):,} | {total / 2**20:.3f} |")
    return "\n".join(lines)


def _card(manifest, reports, rank, energy) -> str:
    how = f"rank {rank}" if rank is not None else f"the smallest rank per module keeping {energy:.0%} of ||delta||_F^2"
    return (f"# SfN LoRA pack\n\nA PEFT LoRA adapter: truncated SVD ({how}) of the delta of modules "
            f"`{manifest.modules}` (layers `{manifest.layers}`) between **{manifest.base_model}** and "
            f"**{manifest.tuned_model}**. Load with `peft.PeftModel.from_pretrained(base_model, THIS_FOLDER)`, or "
            f"merge with `sfn pack apply BASE THIS_FOLDER -o merged/` (checks the base's SHA-256 first).\n\n"
            + report_table(reports) + "\n")


def read_adapter_config(pack) -> dict:
    path = Path(pack) / ADAPTER_CONFIG
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PackError(f"{path}: cannot read it ({exc})") from None
