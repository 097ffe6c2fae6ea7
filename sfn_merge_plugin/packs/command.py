"""Module packs: the selected modules of a fine-tune as a file to check, apply, compress and hot-swap.

    sfn pack extract BASE TUNED --modules o_proj,norm -o reasoning.sfnpack/        # exact: the tuned values
    sfn pack extract BASE TUNED --modules o_proj --rank 64 -o reasoning-lora/       # PEFT LoRA adapter (SVD)
    sfn pack extract BASE TUNED --modules o_proj --energy 0.9 -o reasoning-lora/    # rank per module: 90% kept
    sfn pack info reasoning.sfnpack/
    sfn pack apply BASE reasoning.sfnpack/ -o merged/                               # checks the base first

An exact pack applied gives the tensors `mergekit-yaml` with `sfn_swap` writes for the same selection, bit
for bit, and a recipe may name the pack folder as its sfn_swap donor. `apply` also merges PEFT LoRA
adapters (e.g. one `trl sft --config trl_configs/freeze_lora_oproj.yaml` saved).
"""

from __future__ import annotations


def add_arguments(p):
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ex = sub.add_parser("extract", help="write a pack of the selected modules of TUNED over BASE")
    ex.add_argument("base", help="the base model: local folder or hub id[@revision]")
    ex.add_argument("tuned", help="the fine-tune whose modules the pack holds (same architecture and shapes)")
    ex.add_argument("-o", "--output", required=True, help="pack folder to create (an SfN folder is replaced)")
    ex.add_argument("--modules", required=True, help='SfN module selector: "o_proj", "o_proj,norm", "attn", "re:<regex>"')
    ex.add_argument("--layers", default="all", help='layers: "all" (default), "5-30", "0-3,10", "0.5-1.0"')
    ex.add_argument("--rank", type=int, default=None,
                    help="write a PEFT LoRA adapter of this rank per module instead of an exact pack (default: exact)")
    ex.add_argument("--energy", type=float, default=None,
                    help="LoRA: the smallest rank per module keeping this share of ||delta||_F^2, e.g. 0.9 (default: off)")
    ex.add_argument("--dtype", default=None, choices=["F32", "BF16", "F16"],
                    help="LoRA factors' dtype (default: the base's dtype per module)")
    ex.add_argument("--threads", type=int, default=None,
                    help="LoRA: torch threads for the SVDs (default: torch's own; 1 is fastest on a busy machine)")
    ex.add_argument("--force", action="store_true", help="write into a non-empty folder SfN did not create")
    ex.add_argument("--no-progress", action="store_true", help="no progress bars")

    info = sub.add_parser("info", help="what a pack holds, where it came from, its size")
    info.add_argument("pack", help="an SfN pack folder (exact or LoRA) or a PEFT adapter folder")
    info.add_argument("--verify", action="store_true", help="also check the pack's tensors against their SHA-256")

    ap = sub.add_parser("apply", help="write BASE with a pack applied (checked against the pack first)")
    ap.add_argument("base", help="the base model folder the pack was made for")
    ap.add_argument("pack", help="an SfN pack folder, or a PEFT LoRA adapter folder (trl sft --use_peft output)")
    ap.add_argument("-o", "--output", required=True, help="merged model folder to create (an SfN folder is replaced)")
    ap.add_argument("--force", action="store_true", help="write into a non-empty folder SfN did not create")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    return {"extract": _extract, "info": _info, "apply": _apply}[args.action](args)


def _extract(args) -> int:
    progress = not args.no_progress
    if args.rank is None and args.energy is None:
        from sfn_merge_plugin.packs.extract import extract_exact

        if args.dtype:
            from sfn_merge_plugin.errors import UsageError

            raise UsageError("--dtype applies to LoRA packs (--rank/--energy); an exact pack keeps the stored dtype")
        m = extract_exact(args.base, args.tuned, args.output, args.modules, args.layers, force=args.force, progress=progress)
        for note in m.notes:
            print(f"note: {note}")
        print(f"wrote exact pack {args.output}: {len(m.tensors)} tensors, {_size(args.output) / 2**20:.2f} MiB")
        return 0
    from sfn_merge_plugin.packs.lora import extract_lora, report_table

    if args.threads:
        import torch

        torch.set_num_threads(max(1, args.threads))

    reports = extract_lora(args.base, args.tuned, args.output, args.modules, args.layers, rank=args.rank,
                           energy=args.energy, dtype=args.dtype, force=args.force, progress=progress)
    print(report_table(reports))
    print(f"wrote PEFT LoRA pack {args.output} ({_size(args.output) / 2**20:.2f} MiB on disk)")
    return 0


def _info(args) -> int:
    from pathlib import Path

    from sfn_merge_plugin.packs.manifest import MANIFEST, pack_kind, read_manifest

    kind = pack_kind(args.pack)
    if not (Path(args.pack) / MANIFEST).is_file():
        from sfn_merge_plugin.packs.lora_apply import parse_adapter

        config, lora, whole = parse_adapter(args.pack)
        print(f"PEFT LoRA adapter (no SfN manifest): r={config.get('r')}, lora_alpha={config.get('lora_alpha')}, "
              f"{len(lora)} LoRA modules, {len(whole)} saved whole; base: {config.get('base_model_name_or_path')}")
        print(f"size on disk: {_size(args.pack) / 2**20:.2f} MiB")
        return 0
    m = read_manifest(args.pack)
    if args.verify and kind == "exact":
        from sfn_merge_plugin.packs.check import check_pack_tensors

        check_pack_tensors(args.pack, m)
    rev = lambda r: f"@{r}" if r else ""  # noqa: E731
    print(f"{kind} pack, format {m.format}, SfN {m.sfn_version}")
    print(f"modules {m.modules!r}, layers {m.layers!r}: {len(m.tensors)} tensors, dtype {m.dtype}")
    print(f"base:  {m.base_model}{rev(m.base_revision)} ({m.architecture}, {m.num_layers} layers)")
    print(f"tuned: {m.tuned_model}{rev(m.tuned_revision)}")
    print(f"untie on apply: {m.untie}; size on disk: {_size(args.pack) / 2**20:.2f} MiB")
    by_kind = {}
    for t in m.tensors:
        for k in t.kinds:
            by_kind[k] = by_kind.get(k, 0) + 1
    print("tensors per kind: " + ", ".join(f"{k} {n}" for k, n in by_kind.items()))
    if kind == "lora":
        ranks = [t.rank for t in m.tensors if t.rank is not None]
        energies = [t.kept_energy for t in m.tensors if t.kept_energy is not None]
        if ranks:
            print(f"LoRA ranks {min(ranks)}-{max(ranks)}, kept energy {min(energies):.4f}-{max(energies):.4f}")
    for note in m.notes:
        print(f"note: {note}")
    if args.verify:
        print("verified: the pack's tensors match the manifest" if kind == "exact" else "verify: LoRA packs carry no own checksums")
    return 0


def _apply(args) -> int:
    from sfn_merge_plugin.packs.apply import apply_pack

    r = apply_pack(args.base, args.pack, args.output, force=args.force, progress=not args.no_progress)
    for note in r.notes:
        print(f"note: {note}")
    print(f"wrote {args.output}: {len(r.replaced)} tensors from the {r.kind} pack"
          + (", lm_head untied" if r.untied else "") + ("" if r.checked_base else " (base checked by shapes only)"))
    return 0


def _size(folder) -> int:
    from pathlib import Path

    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())
