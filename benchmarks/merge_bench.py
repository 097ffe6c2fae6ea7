"""Merge Stethoscope benchmark: `mergekit-yaml` + sfn_swap (every o_proj) vs the paper's approach (load
both models with transformers, copy tensors, save_pretrained) vs `cp -r` of the base (the physical limit).

    python benchmarks/merge_bench.py                 # Qwen2-0.5B-shaped bf16 pair (~0.49B parameters)
    python benchmarks/merge_bench.py --layers 12     # smaller, quicker
    python benchmarks/merge_bench.py --sizes 6,24    # does sfn_swap's peak RSS grow with depth?
    python benchmarks/merge_bench.py --size 0.4b --before-commit 8538677   # and the code of an earlier commit
    python benchmarks/merge_bench.py --render benchmarks/results/merge_bench.json   # the README block

Each approach runs in its own process; wall time and peak RSS (ru_maxrss of that process tree) are
reported, as ratios to `cp` and to the naive approach. Page cache is warm for all (the pair is read
once before timing). SfN's part of a `mergekit-yaml` run is its wall time minus that of `python -c "import
mergekit.merge"` in the same round, and, measured inside one process, the `run_merge` step alone. With
--before-commit the same contenders also run on that commit's `sfn_merge_plugin` (side by side, same
round), and every output must be bit-identical to this tree's (and to SFN_NO_RAW_COPY=1's re-encoding).
Results are printed as Markdown tables and written to --json (JSON null where a figure is not measured).
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
    os.sync()  # earlier contenders' dirty pages written back first, not throttling this one's writes
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=None if env is None else {**os.environ, **env})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise RuntimeError(f"{cmd[0]} failed: {proc.stderr.read().decode()[-2000:]}")
    return {"wall_s": round(wall, 3), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


IN_PROCESS = r"""
import sys, time, yaml
from mergekit.config import MergeConfiguration
from mergekit.merge import MergeOptions, run_merge
cfg = MergeConfiguration.model_validate(yaml.safe_load(open(sys.argv[1])))
t0 = time.perf_counter()
run_merge(cfg, sys.argv[2], MergeOptions(quiet=True, out_shard_size=int(sys.argv[3]), copy_tokenizer=False))
print(time.perf_counter() - t0)
"""

CP_ROW = "cp -r (physical limit)"
IMPORT_ROW = "python -c 'import mergekit.merge' (start-up, not ours)"
SFN_ROW = "mergekit-yaml sfn_swap"
BEFORE_ROW = "mergekit-yaml sfn_swap, before"  # the code of --before-commit
REENCODE_ROW = "mergekit-yaml sfn_swap, SFN_NO_RAW_COPY=1 (re-encode every tensor)"
STEP_ROW = "sfn_swap merge step only (run_merge, no start-up)"
STEP_BEFORE_ROW = "sfn_swap merge step only, before"
NAIVE_ROW = "naive (transformers load x2 + save)"


def export_commit(repo: str, commit: str, dest: str) -> str:
    """``sfn_merge_plugin`` as it was at ``commit``, unpacked into ``dest`` (read-only git: archive)."""
    os.makedirs(dest)
    archive = subprocess.run(["git", "-C", repo, "archive", commit, "sfn_merge_plugin"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", dest], input=archive.stdout, check=True)
    return dest


def run_once(root: str, layers: int, args, before_tree: str | None) -> dict:
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
    before_env = None
    if before_tree:  # that commit's sfn_merge_plugin first on the path (the start-up hook imports it from there)
        before_env = {"PYTHONPATH": os.pathsep.join(p for p in (before_tree, os.environ.get("PYTHONPATH")) if p)}
    yaml_cmd = lambda o: [os.path.join(bin_dir, "mergekit-yaml"), recipe, out(o),  # noqa: E731
                          "--out-shard-size", str(args.out_shard_size), "--no-copy-tokenizer"]

    def step(env: dict | None) -> dict:
        shutil.rmtree(out("inproc"), ignore_errors=True)
        os.sync()
        res = subprocess.run([sys.executable, "-c", IN_PROCESS, recipe, out("inproc"), str(args.out_shard_size)],
                             capture_output=True, text=True, check=True, env={**os.environ, **(env or {})})
        return {"wall_s": round(float(res.stdout.strip().splitlines()[-1]), 3), "peak_rss_mib": None}

    rounds = []
    for _ in range(args.rounds):  # contenders interleaved, each round side by side (the machine is shared)
        for d in [out(n) for n in ("cp", "sfn", "sfn-before", "sfn-reencode", "inproc", "naive")]:
            shutil.rmtree(d, ignore_errors=True)
        rows = {CP_ROW: measure(["cp", "-r", base, out("cp")])}
        rows[IMPORT_ROW] = measure([sys.executable, "-c", "import mergekit.merge"])
        rows[SFN_ROW] = measure(yaml_cmd("sfn"))
        if before_env:
            rows[BEFORE_ROW] = measure(yaml_cmd("sfn-before"), env=before_env)
        rows[REENCODE_ROW] = measure(yaml_cmd("sfn-reencode"), env={"SFN_NO_RAW_COPY": "1"})
        rows[STEP_ROW] = step(None)
        if before_env:
            rows[STEP_BEFORE_ROW] = step(before_env)
        if not args.skip_naive:
            rows[NAIVE_ROW] = measure([sys.executable, "-c", NAIVE, base, donor, out("naive")])
        rounds.append(rows)
    shutil.rmtree(out("inproc"), ignore_errors=True)
    weights = lambda d: sorted(f for f in os.listdir(d) if f.endswith((".safetensors", ".safetensors.index.json")))  # noqa: E731
    same = lambda other: bool(weights(out("sfn"))) and weights(out("sfn")) == weights(out(other)) and all(  # noqa: E731
        subprocess.run(["cmp", "-s", os.path.join(out("sfn"), f), os.path.join(out(other), f)]).returncode == 0
        for f in weights(out("sfn")))
    result = {"layers": layers, "parameters": n_params, "rounds": rounds, "rows": median_rows(rounds),
              "raw_copy_output_identical_to_reencoding": same("sfn-reencode")}
    if before_env:
        result["output_identical_to_before"] = same("sfn-before")
    if not all(v for k, v in result.items() if k.startswith(("raw_copy_output", "output_identical"))):
        raise SystemExit(f"outputs differ: {result}")  # a faster merge that writes other bytes is a bug
    return result


def median_rows(rounds: list) -> dict:
    """Per contender, the round with the median wall time."""
    out = {}
    for name in rounds[0]:
        runs = sorted((r[name] for r in rounds), key=lambda r: r["wall_s"])
        out[name] = runs[len(runs) // 2]
    return out


def _median(values: list) -> float:
    values = sorted(values)
    return values[len(values) // 2]


def sfn_part(result: dict, name: str) -> float | None:
    """SfN's own share of a mergekit-yaml run (its wall minus `import mergekit.merge`'s) or of a merge-step
    row, as a multiple of cp -r: the median over rounds of the per-round ratio (side by side, same load)."""
    rounds = [r for r in result.get("rounds", [result["rows"]]) if name in r]
    if not rounds:
        return None
    minus = (lambda r: r[IMPORT_ROW]["wall_s"]) if name.startswith("mergekit-yaml") else (lambda r: 0.0)
    return _median([(r[name]["wall_s"] - minus(r)) / r[CP_ROW]["wall_s"] for r in rounds])


def _rows_named(result: dict) -> dict:
    """Rows under today's names (a results file from before --before-commit called the re-encoding row "before")."""
    old = "mergekit-yaml sfn_swap, before (SFN_NO_RAW_COPY=1: re-encode every tensor)"
    rename = {old: REENCODE_ROW, "sfn_swap merge step only, before (SFN_NO_RAW_COPY=1)": "sfn_swap merge step only, SFN_NO_RAW_COPY=1"}
    fix = lambda rows: {rename.get(k, k): v for k, v in rows.items()}  # noqa: E731
    return {**result, "rows": fix(result["rows"]), "rounds": [fix(r) for r in result.get("rounds", [])]}


def _fmt(x, digits=2) -> str:
    return "-" if x is None or x != x else f"{x:.{digits}f}"


def table(result: dict) -> str:
    result = _rows_named(result)
    rows = result["rows"]
    cp = rows[CP_ROW]
    naive = rows.get(NAIVE_ROW)
    lines = [f"{result['parameters'] / 1e9:.2f}B parameters, bf16, {result['layers']} layers "
             f"(median of {len(result.get('rounds') or [rows])} rounds)", "",
             "| approach | wall s | x cp | x naive | peak RSS MiB | RSS x naive |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        rss = r.get("peak_rss_mib")
        xn = _fmt(r["wall_s"] / naive["wall_s"]) if naive else "-"
        rn = _fmt(rss / naive["peak_rss_mib"]) if naive and rss is not None else "-"
        lines.append(f"| {name} | {_fmt(r['wall_s'])} | {_fmt(r['wall_s'] / cp['wall_s'])} | {xn} | {_fmt(rss, 1)} | {rn} |")
    parts = [(SFN_ROW, BEFORE_ROW, "`mergekit-yaml` minus `import mergekit.merge`"),
             (STEP_ROW, STEP_BEFORE_ROW, "the `run_merge` step alone")]
    if any(sfn_part(result, a) is not None for a, _, _ in parts):
        lines += ["", "| SfN's part, x cp -r (median of per-round ratios) | before | after | after / before |", "|---|---|---|---|"]
        for after, before, what in parts:
            a, b = sfn_part(result, after), sfn_part(result, before)
            lines.append(f"| {what} | {_fmt(b)} | {_fmt(a)} | {_fmt(a / b if a is not None and b else None)} |")
        rss = lambda name: rows[name]["peak_rss_mib"] if name in rows else None  # noqa: E731
        if naive:
            a, b = rss(SFN_ROW), rss(BEFORE_ROW)
            lines.append(f"| peak RSS of `mergekit-yaml`, x naive | {_fmt(b / naive['peak_rss_mib'] if b else None)} | "
                         f"{_fmt(a / naive['peak_rss_mib'] if a else None)} | {_fmt(a / b if a and b else None)} |")
    checks = [("output bit-identical to the re-encoding path (SFN_NO_RAW_COPY=1)", "raw_copy_output_identical_to_reencoding"),
              ("output bit-identical with and without raw copies", "raw_copy_output_identical_to_before"),
              ("output bit-identical to the before commit", "output_identical_to_before")]
    lines += [""] + [f"{what}: {result[key]}" for what, key in checks if key in result]
    return "\n".join(lines)


def render(doc: dict) -> str:
    """The Markdown block for the README: command, environment, and one table per size."""
    head = [f"Command: `{doc['command']}`", "", f"Environment: {doc['environment']}"]
    if doc.get("before"):
        head += ["", f"Before: {doc['before']}. After: {doc.get('after', 'this tree')}."]
    sizes = [r for r in doc["results"]]
    out = "\n".join(head) + "\n\n" + "\n\n".join(table(r) for r in sizes)
    if len(sizes) > 1:
        flat = ", ".join(f"{r['layers']} layers {_fmt(_rows_named(r)['rows'][SFN_ROW]['peak_rss_mib'], 1)} MiB" for r in sizes)
        out += f"\n\nPeak RSS of `mergekit-yaml` by depth: {flat}"
    return out


def _git(*cmd: str) -> str:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run(["git", "-C", repo, *cmd], capture_output=True, text=True, check=True).stdout.strip()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_build":
        root, layers, hidden, inter, vocab, heads = argv[1], *map(int, argv[2:7])
        print(json.dumps(build_pair(root, layers, hidden, inter, vocab, heads)))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=24, help="decoder layers (default 24)")
    p.add_argument("--sizes", default=None, help="comma-separated depths to compare; the naive approach runs only at the first")
    p.add_argument("--hidden", type=int, default=896, help="hidden size (default 896)")
    p.add_argument("--intermediate", type=int, default=4864, help="MLP size (default 4864)")
    p.add_argument("--vocab", type=int, default=151936, help="vocabulary (default 151936)")
    p.add_argument("--heads", type=int, default=14, help="attention heads (default 14)")
    p.add_argument("--size", choices=sorted(SIZES), default=None,
                   help="a named shape (sets --layers/--hidden/--intermediate/--vocab/--heads); default: the options")
    p.add_argument("--out-shard-size", type=int, default=200_000_000,
                   help="bytes (mergekit's writer holds one shard's tensors; default 200000000)")
    p.add_argument("--skip-naive", action="store_true", help="leave out the naive transformers approach")
    p.add_argument("--rounds", type=int, default=3, help="rounds of all contenders; each row reports its median (default 3)")
    p.add_argument("--before-commit", default=None, metavar="REV",
                   help="also run this git commit's sfn_merge_plugin side by side (default: none)")
    p.add_argument("--render", default=None, metavar="JSON", help="print the Markdown block of a results file and exit")
    p.add_argument("--json", default=None, help="write the results here (default: print only)")
    p.add_argument("--workdir", default=None, help="where to build the pair (default: a temporary folder, removed)")
    args = p.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            print(render(json.load(f)))
        return 0
    for k, v in SIZES.get(args.size, {}).items():
        setattr(args, k, v)
    root = args.workdir or tempfile.mkdtemp(prefix="sfn-merge-bench-")
    try:
        before_tree = None
        if args.before_commit:
            repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            before_tree = export_commit(repo, args.before_commit, os.path.join(root, "before-tree"))
        sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [args.layers]
        results = []
        for i, layers in enumerate(sizes):
            results.append(run_once(root, layers, args, before_tree))
            print(table(results[-1]) + "\n", flush=True)
            if i == 0 and len(sizes) > 1:
                args.skip_naive = True
        if args.json:
            import platform
            from importlib.metadata import version

            import torch

            env = (f"threads={os.environ.get('OMP_NUM_THREADS', 'default')}, cpus={os.cpu_count()}, python {platform.python_version()}, "
                   f"torch {torch.__version__}, mergekit {version('mergekit')}, "
                   "seeds 0 (base) / 1 (donor), page cache warm, shared machine")
            head = _git("rev-parse", "--short", "HEAD")
            dirty = bool(_git("status", "--porcelain", "--", "sfn_merge_plugin"))
            doc = {"command": "python benchmarks/merge_bench.py " + " ".join(argv), "environment": env,
                   "after": f"commit {head}" + (" + uncommitted changes to sfn_merge_plugin" if dirty else ""),
                   "before": f"commit {_git('rev-parse', '--short', args.before_commit)}" if args.before_commit else None,
                   "results": results}
            with open(args.json, "w") as f:
                json.dump(doc, f, indent=1, allow_nan=False)  # JSON has no NaN: unmeasured figures are null
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
