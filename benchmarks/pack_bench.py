"""Module packs benchmark: `sfn pack extract` / `apply` against `cp -r` of the base (the physical limit) and
`mergekit-yaml` + sfn_swap (the same model written by mergekit), with peak RSS, on delta_bench's synthetic
Qwen2-0.5B-shaped bf16 pair (~0.49B parameters, tied embeddings; o_proj moved most).

    python benchmarks/pack_bench.py --json benchmarks/results/pack_bench_cpu.json
    python benchmarks/pack_bench.py --layers 12        # quicker; also shows RSS does not follow model size

Each command runs in its own process (wall time, ru_maxrss); the page cache is warmed before each run.
Also reported: the LoRA extraction (truncated SVD of every o_proj delta on the CPU) at --rank and
--energy, with the kept energy and adapter size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from delta_bench import SIZES, build_pair, measure, qwen2_tensors  # noqa: E402


def sfn(*args) -> list:
    return [sys.executable, "-m", "sfn_merge_plugin.cli", *args]


def run_depth(workdir: Path, dims: dict, args, with_reference: bool) -> dict:
    subprocess.run([sys.executable, str(Path(__file__).with_name("delta_bench.py")), "--build-only", "--size", "0.5b",
                    "--layers", str(dims["num_hidden_layers"]), "--workdir", str(workdir.parent)], check=True)
    base, tuned = workdir / "base", workdir / "tuned"
    files = [str(base / "model.safetensors"), str(tuned / "model.safetensors")]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=str(args.threads))
    out = workdir / "bench-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    recipe = out / "recipe.yml"
    recipe.write_text(f"merge_method: sfn_swap\nbase_model: {base}\nmodels:\n  - model: {tuned}\nparameters:\n  modules: o_proj\n")
    runs = {
        "cp -r base": ["cp", "-r", str(base), str(out / "cp")],
        "sfn pack extract (exact, o_proj)": sfn("pack", "extract", str(base), str(tuned), "--modules", "o_proj", "-o",
                                               str(out / "pack"), "--no-progress"),
        "sfn pack apply (exact, o_proj)": sfn("pack", "apply", str(base), str(out / "pack"), "-o", str(out / "applied"),
                                             "--no-progress"),
        f"sfn pack extract --rank {args.rank} (SVD, o_proj)": sfn(
            "pack", "extract", str(base), str(tuned), "--modules", "o_proj", "--rank", str(args.rank), "-o",
            str(out / "lora-rank"), "--no-progress"),
        f"sfn pack extract --energy {args.energy} (SVD, o_proj)": sfn(
            "pack", "extract", str(base), str(tuned), "--modules", "o_proj", "--energy", str(args.energy), "-o",
            str(out / "lora-energy"), "--no-progress"),
        "sfn pack apply (LoRA, o_proj)": sfn("pack", "apply", str(base), str(out / "lora-rank"), "-o",
                                            str(out / "applied-lora"), "--no-progress"),
    }
    if with_reference:
        runs["mergekit-yaml sfn_swap (o_proj)"] = [str(Path(sys.executable).with_name("mergekit-yaml")), str(recipe),
                                                   str(out / "mergekit"), "--no-copy-tokenizer"]
    results = {}
    for _ in range(max(1, args.repeat)):
        for name, cmd in runs.items():
            if name.startswith("cp"):
                shutil.rmtree(out / "cp", ignore_errors=True)
            measure(["cat", *files])
            r = measure(cmd, env, out / "last.log")
            if name not in results or r["wall_s"] < results[name]["wall_s"]:
                results[name] = r
    cp = results["cp -r base"]["wall_s"]
    for r in results.values():
        r["x_cp"] = r["wall_s"] / cp
    lora = {k: json.loads((out / k / "lora_report.json").read_text()) for k in ("lora-rank", "lora-energy")}
    summary = {k: {"ranks": sorted({m["rank"] for m in v["modules"]}),
                   "kept_energy_min": min(m["kept_energy"] for m in v["modules"]),
                   "kept_energy_max": max(m["kept_energy"] for m in v["modules"]),
                   "adapter_bytes": os.path.getsize(out / k / "adapter_model.safetensors")} for k, v in lora.items()}
    identical = None
    if with_reference:
        identical = same_tensors(out / "applied", out / "mergekit")
    return {"layers": dims["num_hidden_layers"], "params": sum(_numel(s) for _, s in qwen2_tensors(dims)),
            "base_bytes": os.path.getsize(files[0]), "pack_bytes": os.path.getsize(out / "pack" / "model.safetensors"),
            "results": results, "lora": summary, "apply_equals_mergekit": identical}


def same_tensors(a: Path, b: Path) -> bool:
    """Same names and bit-identical stored bytes (compared tensor by tensor, streamed)."""
    from sfn_merge_plugin.checkpoint import open_checkpoint
    from sfn_merge_plugin.packs.manifest import stored_sha256

    ca, cb = open_checkpoint(str(a)), open_checkpoint(str(b))
    return set(ca.tensors) == set(cb.tensors) and all(
        ca.tensors[n].dtype == cb.tensors[n].dtype and stored_sha256(ca.tensors[n]) == stored_sha256(cb.tensors[n])
        for n in ca.tensors)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def markdown(depth: dict) -> str:
    lines = [f"{depth['params'] / 1e6:.0f}M parameters, {depth['layers']} layers, base {depth['base_bytes'] / 2**20:.0f} MiB, "
             f"exact o_proj pack {depth['pack_bytes'] / 2**20:.1f} MiB",
             "| command | wall s | x cp -r | peak RSS MiB |", "|---|---:|---:|---:|"]
    for name, r in depth["results"].items():
        lines.append(f"| {name} | {r['wall_s']:.2f} | {r['x_cp']:.2f} | {r['peak_rss_mb']:.0f} |")
    for k, v in depth["lora"].items():
        lines.append(f"{k}: ranks {v['ranks'][0]}-{v['ranks'][-1]}, kept energy {v['kept_energy_min']:.3f}-"
                     f"{v['kept_energy_max']:.3f}, adapter {v['adapter_bytes'] / 2**20:.1f} MiB")
    if depth["apply_equals_mergekit"] is not None:
        lines.append(f"apply == mergekit-yaml sfn_swap, every tensor bit for bit: {depth['apply_equals_mergekit']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=24, help="depth of the 0.5B-shaped pair (default 24, the real depth)")
    p.add_argument("--sizes", default=None, help="comma-separated depths; the reference merge runs on the first only")
    p.add_argument("--rank", type=int, default=64, help="LoRA rank for the SVD run (default 64)")
    p.add_argument("--energy", type=float, default=0.9, help="LoRA energy for the SVD run (default 0.9)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads (default: all CPUs)")
    p.add_argument("--repeat", type=int, default=1, help="runs per command; the fastest is kept (default 1)")
    p.add_argument("--workdir", default="/tmp/sfn-pack-bench", help="where the pairs are built (reused if present)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    depths = [int(s) for s in args.sizes.split(",")] if args.sizes else [args.layers]
    out = []
    for i, layers in enumerate(depths):
        dims = dict(SIZES["0.5b"], num_hidden_layers=layers)
        workdir = Path(args.workdir) / f"0.5b-L{layers}"
        out.append(run_depth(workdir, dims, args, with_reference=i == 0))
        print(markdown(out[-1]) + "\n", flush=True)
    if args.json:
        import torch

        doc = {"command": "python benchmarks/pack_bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "threads": args.threads, "repeat": args.repeat, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs "
               "(shared with other jobs: compare ratios from one run)", "python": platform.python_version(),
               "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "seed": "delta_bench fixed seeds",
               "depths": out}
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
