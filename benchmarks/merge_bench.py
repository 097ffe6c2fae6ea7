"""Merge Stethoscope benchmark: `mergekit-yaml` + sfn_swap (every o_proj) vs the paper's approach (load
both models with transformers, copy tensors, save_pretrained) vs `cp -r` of the base (the physical limit).

    python benchmarks/merge_bench.py                 # Qwen2-0.5B-shaped bf16 pair (~0.49B parameters)
    python benchmarks/merge_bench.py --layers 12     # smaller, quicker
    python benchmarks/merge_bench.py --sizes 6,24    # does sfn_swap's peak RSS grow with depth?

Each approach runs in its own process; wall time and peak RSS (ru_maxrss of that process tree) are
reported, as ratios to `cp` and to the naive approach. Page cache is warm for all (the pair is read
once before timing). Results are printed as a Markdown table and written to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

NAIVE = r"""
import sys, torch
from transformers import AutoModelForCausalLM
base, donor, out = sys.argv[1:4]
a = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
b = AutoModelForCausalLM.from_pretrained(donor, dtype=torch.bfloat16)
sd = b.state_dict()
with torch.no_grad():
    for name, p in a.named_parameters():
        if "o_proj" in name:
            p.copy_(sd[name])
a.save_pretrained(out)
"""


SIZES = {  # named shapes: issue 15's 0.4B-shaped pair (24 layers, hidden 1024, vocab 32k)
    "0.4b": {"layers": 24, "hidden": 1024, "intermediate": 4096, "vocab": 32000, "heads": 16},
}


def build_pair(root: str, layers: int, hidden: int, inter: int, vocab: int, heads: int = 14) -> tuple:
    """A synthetic Qwen2 pair written straight to safetensors (no model init: fast, low memory)."""
    import torch
    from safetensors.torch import save_file

    from sfn_merge_plugin.tiny_models import tiny_config

    config = tiny_config("qwen2", layers=layers, hidden=hidden, heads=heads, kv_heads=2, intermediate=inter,
                         vocab=vocab, tied=True, torch_dtype="bfloat16")
    config.architectures = ["Qwen2ForCausalLM"]
    kv = hidden // heads * 2
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (hidden, hidden), p + "self_attn.q_proj.bias": (hidden,),
            p + "self_attn.k_proj.weight": (kv, hidden), p + "self_attn.k_proj.bias": (kv,),
            p + "self_attn.v_proj.weight": (kv, hidden), p + "self_attn.v_proj.bias": (kv,),
            p + "self_attn.o_proj.weight": (hidden, hidden),
            p + "mlp.gate_proj.weight": (inter, hidden), p + "mlp.up_proj.weight": (inter, hidden),
            p + "mlp.down_proj.weight": (hidden, inter),
        })
    paths = []
    for k, name in enumerate(("base", "donor")):
        d = os.path.join(root, name)
        os.makedirs(d)
        gen = torch.Generator().manual_seed(k)
        save_file({n: (0.02 * torch.randn(s, generator=gen)).to(torch.bfloat16) for n, s in shapes.items()},
                  os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        config.save_pretrained(d)
        paths.append(d)
    n_params = sum(int(torch.Size(s).numel()) for s in shapes.values())
    return paths[0], paths[1], n_params


def measure(cmd: list, env: dict | None = None) -> dict:
    """Wall time and peak RSS (MiB) of one command, from its own rusage."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=None if env is None else {**os.environ, **env})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise RuntimeError(f"{cmd[0]} failed: {proc.stderr.read().decode()[-2000:]}")
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


IN_PROCESS = r"""
import sys, time, yaml
from mergekit.config import MergeConfiguration
from mergekit.merge import MergeOptions, run_merge
cfg = MergeConfiguration.model_validate(yaml.safe_load(open(sys.argv[1])))
t0 = time.perf_counter()
run_merge(cfg, sys.argv[2], MergeOptions(quiet=True, out_shard_size=int(sys.argv[3]), copy_tokenizer=False))
print(time.perf_counter() - t0)
"""


def run_once(root: str, layers: int, args) -> dict:
    # built in a child process: this process stays small, so its children's ru_maxrss is their own
    build = subprocess.run([sys.executable, __file__, "--_build", os.path.join(root, f"L{layers}"), str(layers),
                            str(args.hidden), str(args.intermediate), str(args.vocab), str(args.heads)],
                           capture_output=True, text=True, check=True)
    base, donor, n_params = json.loads(build.stdout.strip().splitlines()[-1])
    subprocess.run(["cat", os.path.join(base, "model.safetensors"), os.path.join(donor, "model.safetensors")],
                   stdout=subprocess.DEVNULL, check=True)  # warm the page cache for everyone
    recipe = os.path.join(root, f"recipe{layers}.yml")
    with open(recipe, "w") as f:
        f.write(f"merge_method: sfn_swap\nbase_model: {base}\nmodels:\n  - model: {donor}\n"
                f"parameters:\n  modules: o_proj\n")
    bin_dir = os.path.dirname(sys.executable)
    out = lambda name: os.path.join(root, f"out-{name}-{layers}")  # noqa: E731
    rounds = []
    for _ in range(args.rounds):  # contenders interleaved, each round side by side (the machine is shared)
        for d in [out(n) for n in ("cp", "sfn", "sfn-before", "inproc", "naive")]:
            shutil.rmtree(d, ignore_errors=True)
        rows = {"cp -r (physical limit)": measure(["cp", "-r", base, out("cp")])}
        rows[IMPORT_ROW] = measure([sys.executable, "-c", "import mergekit.merge"])
        yaml_cmd = lambda o: [os.path.join(bin_dir, "mergekit-yaml"), recipe, out(o),  # noqa: E731
                              "--out-shard-size", str(args.out_shard_size), "--no-copy-tokenizer"]
        rows[SFN_ROW] = measure(yaml_cmd("sfn"))
        rows[BEFORE_ROW] = measure(yaml_cmd("sfn-before"), env={"SFN_NO_RAW_COPY": "1"})
        res = subprocess.run([sys.executable, "-c", IN_PROCESS, recipe, out("inproc"), str(args.out_shard_size)],
                             capture_output=True, text=True, check=True)
        rows["sfn_swap merge step only (run_merge, no start-up)"] = {"wall_s": round(float(res.stdout.strip().splitlines()[-1]), 2),
                                                                   "peak_rss_mib": float("nan")}
        shutil.rmtree(out("inproc"), ignore_errors=True)
        res = subprocess.run([sys.executable, "-c", IN_PROCESS, recipe, out("inproc"), str(args.out_shard_size)],
                             capture_output=True, text=True, check=True, env={**os.environ, "SFN_NO_RAW_COPY": "1"})
        rows["sfn_swap merge step only, before (SFN_NO_RAW_COPY=1)"] = {
            "wall_s": round(float(res.stdout.strip().splitlines()[-1]), 2), "peak_rss_mib": float("nan")}
        if not args.skip_naive:
            rows[NAIVE_ROW] = measure([sys.executable, "-c", NAIVE, base, donor, out("naive")])
        rounds.append(rows)
    shards = lambda d: sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))  # noqa: E731
    same = shards(out("sfn")) == shards(out("sfn-before")) and all(
        subprocess.run(["cmp", "-s", os.path.join(out("sfn"), f), os.path.join(out("sfn-before"), f)]).returncode == 0
        for f in shards(out("sfn")))
    return {"layers": layers, "parameters": n_params, "rounds": rounds, "rows": median_rows(rounds),
            "raw_copy_output_identical_to_before": bool(same) and bool(shards(out("sfn")))}


IMPORT_ROW = "python -c 'import mergekit.merge' (start-up, not ours)"
SFN_ROW = "mergekit-yaml sfn_swap"
BEFORE_ROW = "mergekit-yaml sfn_swap, before (SFN_NO_RAW_COPY=1: re-encode every tensor)"
NAIVE_ROW = "naive (transformers load x2 + save)"


def median_rows(rounds: list) -> dict:
    """Per contender, the round with the median wall time."""
    out = {}
    for name in rounds[0]:
        runs = sorted((r[name] for r in rounds), key=lambda r: r["wall_s"])
        out[name] = runs[len(runs) // 2]
    return out


def sfn_part(rows: dict, name: str, per_round: list | None = None) -> float:
    """SfN's own share of a mergekit-yaml run, as a multiple of cp -r (median over rounds of the per-round ratio)."""
    rounds = per_round or [rows]
    ratios = sorted((r[name]["wall_s"] - r[IMPORT_ROW]["wall_s"]) / r["cp -r (physical limit)"]["wall_s"] for r in rounds)
    return ratios[len(ratios) // 2]


def table(result: dict) -> str:
    rows = result["rows"]
    cp = rows["cp -r (physical limit)"]
    naive = rows.get("naive (transformers load x2 + save)")
    lines = [f"{result['parameters'] / 1e9:.2f}B parameters, bf16, {result['layers']} layers",
             "| approach | wall s | x cp | x naive | peak RSS MiB | RSS x naive |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        xn = f"{r['wall_s'] / naive['wall_s']:.2f}" if naive else "-"
        rn = f"{r['peak_rss_mib'] / naive['peak_rss_mib']:.2f}" if naive and r["peak_rss_mib"] == r["peak_rss_mib"] else "-"
        lines.append(f"| {name} | {r['wall_s']} | {r['wall_s'] / cp['wall_s']:.2f} | {xn} | {r['peak_rss_mib']} | {rn} |")
    if IMPORT_ROW in rows:
        for name in (BEFORE_ROW, SFN_ROW):
            lines.append(f"\nSfN's part of `{name}` (wall minus `import mergekit.merge`, median of "
                         f"{len(result.get('rounds', [rows]))} rounds): {sfn_part(rows, name, result.get('rounds')):.2f}x cp -r")
        lines.append(f"output bit-identical with and without raw copies: {result.get('raw_copy_output_identical_to_before')}")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_build":
        root, layers, hidden, inter, vocab, heads = argv[1], *map(int, argv[2:7])
        print(json.dumps(build_pair(root, layers, hidden, inter, vocab, heads)))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--sizes", default=None, help="comma-separated depths to compare (sfn_swap and cp only after the first)")
    p.add_argument("--hidden", type=int, default=896)
    p.add_argument("--intermediate", type=int, default=4864)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--heads", type=int, default=14)
    p.add_argument("--size", choices=sorted(SIZES), default=None,
                   help="a named shape (sets --layers/--hidden/--intermediate/--vocab/--heads); default: the options")
    p.add_argument("--out-shard-size", type=int, default=200_000_000, help="bytes (mergekit's writer holds one shard in RAM)")
    p.add_argument("--skip-naive", action="store_true")
    p.add_argument("--rounds", type=int, default=3, help="rounds of all contenders; each row reports its median")
    p.add_argument("--render", default=None, metavar="JSON", help="print the tables of a results file and exit")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--workdir", default=None, help="where to build the pair (default: a temporary folder, removed)")
    args = p.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            doc = json.load(f)
        print(f"`{doc['command']}` ({doc['environment']})\n")
        print("\n\n".join(table(r) for r in doc["results"]))
        return 0
    for k, v in SIZES.get(args.size, {}).items():
        setattr(args, k, v)
    root = args.workdir or tempfile.mkdtemp(prefix="sfn-merge-bench-")
    try:
        sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [args.layers]
        results = []
        for i, layers in enumerate(sizes):
            results.append(run_once(root, layers, args))
            print(table(results[-1]) + "\n", flush=True)
            if i == 0 and len(sizes) > 1:
                args.skip_naive = True
        if args.json:
            import platform

            import mergekit
            import torch

            env = (f"threads={os.environ.get('OMP_NUM_THREADS', 'default')}, cpus={os.cpu_count()}, python {platform.python_version()}, "
                   f"torch {torch.__version__}, mergekit {getattr(mergekit, '__version__', '0.1.5')}, "
                   "seeds 0 (base) / 1 (donor), shared machine")
            with open(args.json, "w") as f:
                json.dump({"command": "python benchmarks/merge_bench.py " + " ".join(argv), "environment": env,
                           "results": results}, f, indent=1)
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
