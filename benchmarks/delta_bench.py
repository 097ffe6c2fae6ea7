"""Benchmark ``sfn delta`` side by side with the naive approaches and with reading the files once.

Builds a synthetic base/fine-tune pair (bf16, written tensor by tensor, so building needs little memory;
``--size 0.4b`` is the pair of issue 15: 24 layers, hidden 1024, vocab 32k) and runs, each in its own
process, interleaved round by round (so a busy machine slows all contenders alike):

  cat         cat both checkpoints to /dev/null: the physical limit of reading them (warm page cache)
  norm loop   safetensors.torch.load_file both files, then ||B - A|| per tensor (norms only)
  sfn delta   the Delta Stethoscope, every statistic incl. exact histograms (--no-plots, and with figures)
  before      the same command from an earlier commit (--before REV: exported with ``git archive``)
  naive       load both models with transformers, then (B - A).norm() per tensor (--naive)

reporting wall time and peak RSS (ru_maxrss of the child), the best and the median over rounds, and the
median of the per-round ratios to the norm loop. Example:

    python benchmarks/delta_bench.py --size 0.4b --rounds 5 --before 75e885f --json benchmarks/results/delta_bench.json
    python benchmarks/delta_bench.py --render benchmarks/results/delta_bench.json   # the README table
    python benchmarks/delta_bench.py --size small                                   # ~50M parameters, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

SIZES = {  # Qwen2 shapes (tied embeddings, as the real 0.5B and 1.5B)
    "small": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2,
                  intermediate_size=2048, vocab_size=32000),
    "0.4b": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=4,
                 intermediate_size=4096, vocab_size=32000),  # the pair of issue 15 (~0.4B parameters)
    "0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864, vocab_size=151936),
    "1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                 intermediate_size=8960, vocab_size=151936),
}


def qwen2_config(dims: dict) -> dict:
    return dict(dims, architectures=["Qwen2ForCausalLM"], model_type="qwen2", tie_word_embeddings=True,
                hidden_act="silu", max_position_embeddings=4096, rms_norm_eps=1e-6, rope_theta=10000.0,
                torch_dtype="bfloat16", bos_token_id=0, eos_token_id=1, use_cache=True)


def qwen2_tensors(dims: dict) -> list:
    """(name, shape) of a Qwen2 checkpoint with these dimensions, tied embeddings (no lm_head)."""
    h, inter, v = dims["hidden_size"], dims["intermediate_size"], dims["vocab_size"]
    hd = h // dims["num_attention_heads"]
    kv = dims["num_key_value_heads"] * hd
    out = [("model.embed_tokens.weight", (v, h)), ("model.norm.weight", (h,))]
    for i in range(dims["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,)),
                (p + "self_attn.q_proj.weight", (h, h)), (p + "self_attn.q_proj.bias", (h,)),
                (p + "self_attn.k_proj.weight", (kv, h)), (p + "self_attn.k_proj.bias", (kv,)),
                (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.v_proj.bias", (kv,)),
                (p + "self_attn.o_proj.weight", (h, h)), (p + "mlp.gate_proj.weight", (inter, h)),
                (p + "mlp.up_proj.weight", (inter, h)), (p + "mlp.down_proj.weight", (h, inter))]
    return sorted(out)


def _values(name: str, shape: tuple, index: int, tuned: bool, scale: float):
    """Base values (N(0, 0.02); norms near 1), and for the fine-tune the same plus scale x std of noise
    (twice that on o_proj, so the benchmark pair has some structure)."""
    import torch

    g = torch.Generator().manual_seed(1000 + index)
    if len(shape) == 1 and "norm" in name:
        x = 1.0 + 0.05 * torch.randn(shape, generator=g)
    else:
        x = 0.02 * torch.randn(shape, generator=g)
    if tuned:
        g2 = torch.Generator().manual_seed(5000 + index)
        s = scale * (2.0 if "o_proj" in name else 1.0) * float(x.std())
        x.add_(s * torch.randn(shape, generator=g2))
    return x.to(torch.bfloat16)


def write_checkpoint(folder: Path, dims: dict, tuned: bool, scale: float):
    """A bf16 safetensors checkpoint written tensor by tensor (the header first, from the shapes)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    tensors = qwen2_tensors(dims)
    header, offset = {}, 0
    for name, shape in tensors:
        n = 2
        for d in shape:
            n *= d
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = folder / "model.safetensors.partial"
    with open(tmp, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for i, (name, shape) in enumerate(tensors):
            f.write(_values(name, shape, i, tuned, scale).view(-1).view(torch.uint8).numpy().data)
    os.replace(tmp, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(qwen2_config(dims), indent=1))


def _spec_text(dims: dict, scale: float) -> str:
    return json.dumps({"dims": dims, "scale": scale}, sort_keys=True)


def is_built(workdir: Path, dims: dict, scale: float) -> bool:
    stamp = workdir / "pair.json"
    return (stamp.is_file() and stamp.read_text() == _spec_text(dims, scale)
            and all((workdir / side / "model.safetensors").is_file() for side in ("base", "tuned")))


def build_pair(workdir: Path, dims: dict, scale: float) -> tuple:
    """The pair in ``workdir`` (base/, tuned/), built unless an identical one is there."""
    base, tuned = workdir / "base", workdir / "tuned"
    if is_built(workdir, dims, scale):
        return base, tuned, False
    workdir.mkdir(parents=True, exist_ok=True)
    write_checkpoint(base, dims, False, scale)
    write_checkpoint(tuned, dims, True, scale)
    (workdir / "pair.json").write_text(_spec_text(dims, scale))
    return base, tuned, True


NAIVE = """
import sys, time, torch
from transformers import AutoModelForCausalLM
torch.set_num_threads({threads})
a = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
b = AutoModelForCausalLM.from_pretrained(sys.argv[2], dtype=torch.bfloat16)
sa, sb = a.state_dict(), b.state_dict()
norms = {{k: (sb[k].float() - sa[k].float()).norm().item() for k in sa}}
print(len(norms), "tensors")
"""


NORM_LOOP = """
import sys, torch
from safetensors.torch import load_file
torch.set_num_threads({threads})
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
norms = {{k: (b[k].float() - a[k].float()).norm().item() for k in a}}
print(len(norms), "tensors")
"""


def measure(cmd: list, env=None, log: Path = None, cwd=None) -> dict:
    """Wall time and peak RSS of one child process (its output goes to ``log``, not into this process:
    a child's peak RSS starts at its parent's, so this process must stay small)."""
    with open(log or os.devnull, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        if log:
            sys.stderr.write(Path(log).read_text(errors="replace")[-3000:])
        raise SystemExit(f"benchmark command failed ({code}): {' '.join(map(str, cmd))}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


def export_revision(rev: str, dest: Path) -> Path:
    """``sfn_merge_plugin`` as of git revision ``rev``, exported to ``dest`` (read-only use of the repository)."""
    repo = Path(__file__).resolve().parent.parent
    commit = subprocess.run(["git", "rev-parse", rev], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    target = dest / commit[:12]
    if not (target / "sfn_merge_plugin").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit, "sfn_merge_plugin"], cwd=repo, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def versions() -> dict:
    """Versions of what the contenders run on (read from package metadata: nothing heavy imported here)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "numpy", "safetensors", "transformers", "mergekit", "sfn-merge-plugin"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    repo = Path(__file__).resolve().parent.parent
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True)
    out["sfn_commit"] = head.stdout.strip() + (" + working tree" if subprocess.run(
        ["git", "diff", "--quiet", "HEAD", "--", "sfn_merge_plugin"], cwd=repo).returncode else "")
    return out


def machine() -> dict:
    return {"cpus_available": len(os.sched_getaffinity(0)), "cpu": platform.processor() or platform.machine(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def summarize(rounds: list, reference: str) -> dict:
    """Best and median wall/RSS per contender, and the median over rounds of each one's wall / reference's."""
    import statistics

    names = list(rounds[0])
    out = {}
    for name in names:
        walls = [r[name]["wall_s"] for r in rounds]
        rss = [r[name]["peak_rss_mb"] for r in rounds]
        ratios = [r[name]["wall_s"] / r[reference]["wall_s"] for r in rounds] if reference in rounds[0] else []
        out[name] = {"best_wall_s": round(min(walls), 3), "median_wall_s": round(statistics.median(walls), 3),
                     "peak_rss_mb": round(max(rss), 1),
                     f"median_ratio_to_{reference.split(' ')[0]}": round(statistics.median(ratios), 3) if ratios else None,
                     "walls_s": [round(w, 3) for w in walls]}
        if all("cpu_s" in r[name] for r in rounds):  # CPU seconds: less sensitive to a busy machine than wall time
            out[name]["median_cpu_s"] = round(statistics.median(r[name]["cpu_s"] for r in rounds), 3)
    return out


def render(result: dict) -> str:
    """The Markdown table of a results file (what README/docs show)."""
    ref = result["reference"]
    key = f"median_ratio_to_{ref.split(' ')[0]}"
    short = ref.split(" (")[0]
    lines = [f"| approach | best wall (s) | median wall (s) | wall / {short} (median of rounds) | speed-up over {short} | peak RSS (MB) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in result["summary"].items():
        ratio = r.get(key)
        lines.append(f"| {name.replace('|', chr(92) + '|')} | {r['best_wall_s']:.2f} | {r['median_wall_s']:.2f} | {ratio:.2f} | {1 / ratio:.2f}x | "
                     f"{r['peak_rss_mb']:.0f} |")
    p = result["pair"]
    lines.append("")
    lines.append(f"{p['params'] / 1e6:.0f}M-parameter bf16 pair ({p['size']}: {p['dims']['num_hidden_layers']} layers, hidden "
                 f"{p['dims']['hidden_size']}, vocab {p['dims']['vocab_size']}), {result['threads']} threads, warm page cache, "
                 f"{result['rounds']} interleaved rounds on a {result['machine']['cpus_available']}-CPU machine "
                 f"{'shared with other jobs' if result.get('shared_machine') else ''} (load average at start "
                 f"{result['machine']['load_average_at_start'][0]}); command: `{result['command']}`")
    return "\n".join(lines)


BEGIN, END = "<!-- delta_bench:begin -->", "<!-- delta_bench:end -->"


def write_block(md: Path, table: str, command: str) -> None:
    """Put ``table`` between the delta_bench markers of ``md`` (the markers must be there already)."""
    text = md.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{md}: no {BEGIN} ... {END} block to fill; add the two markers where the table goes")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    md.write_text(f"{head}{BEGIN}\n<!-- written by `{command}`: do not edit by hand -->\n{table}\n{END}{tail}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="0.4b", help="pair shape (default: 0.4b)")
    p.add_argument("--layers", type=int, default=None, help="override the depth (smaller = faster to build)")
    p.add_argument("--scale", type=float, default=0.1, help="fine-tune noise, relative to each tensor's std")
    p.add_argument("--workdir", default="/tmp/sfn-delta-bench", help="where the pair is built (reused if present)")
    p.add_argument("--threads", type=int, default=None, help="threads for every contender (default: the CPUs available)")
    p.add_argument("--rounds", "--repeat", type=int, default=3, help="interleaved rounds of all contenders (default: 3)")
    p.add_argument("--before", default=None, metavar="REV",
                   help="also run `sfn delta` as of this git revision (exported with git archive)")
    p.add_argument("--naive", action="store_true",
                   help="also run the transformers approach (it needs 1.5-2x the pair in RAM)")
    p.add_argument("--no-figures", action="store_true", help="skip the `sfn delta` run that also draws the figures")
    p.add_argument("--shared", action="store_true", help="record that the machine was shared with other jobs")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--render", default=None, metavar="JSON", help="print the Markdown table of a results file and exit")
    p.add_argument("--write-docs", default=None, metavar="MD",
                   help="with --render: replace the block between the delta_bench markers in this Markdown file")
    p.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.render:
        table = render(json.loads(Path(args.render).read_text()))
        if args.write_docs:
            write_block(Path(args.write_docs), table, f"python benchmarks/delta_bench.py --render {args.render}")
        print(table)
        return 0

    dims = dict(SIZES[args.size])
    if args.layers:
        dims["num_hidden_layers"] = args.layers
    threads = args.threads or len(os.sched_getaffinity(0))
    params = sum(_numel(s) for _, s in qwen2_tensors(dims))
    workdir = Path(args.workdir) / f"{args.size}-L{dims['num_hidden_layers']}"
    if args.build_only:
        build_pair(workdir, dims, args.scale)
        return 0
    # build in a child: this process stays small (a forked child's peak RSS starts at its parent's)
    t0 = time.perf_counter()
    built = not is_built(workdir, dims, args.scale)
    subprocess.run([sys.executable, __file__, "--build-only", "--size", args.size, "--scale", str(args.scale),
                    "--workdir", args.workdir] + (["--layers", str(args.layers)] if args.layers else []), check=True)
    base, tuned = workdir / "base", workdir / "tuned"
    files = [str(base / "model.safetensors"), str(tuned / "model.safetensors")]
    nbytes = sum(os.path.getsize(f) for f in files)
    print(f"pair: {args.size} Qwen2-shaped, {dims['num_hidden_layers']} layers, {params / 1e6:.0f}M parameters, bf16, "
          f"{nbytes / 1e9:.2f} GB in all ({'built' if built else 'reused'} in {time.perf_counter() - t0:.0f} s) "
          f"at {workdir}", flush=True)

    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=str(threads))
    repo = str(Path(__file__).resolve().parent.parent)
    out = workdir / "delta-out"

    def sfn_delta(*extra, cwd=repo):
        # `python -m` puts the working folder first on sys.path: that folder's sfn_merge_plugin runs
        return ([sys.executable, "-m", "sfn_merge_plugin.cli", "delta", str(base), str(tuned), "-o", str(out),
                 "--no-progress", "--threads", str(threads), *extra], cwd)

    runs = {
        "cat both files > /dev/null": (["cat", *files], None),
        "norm loop (load_file x2, ||B-A|| per tensor)": ([sys.executable, "-c", NORM_LOOP.format(threads=threads),
                                                          *files], None),
        "sfn delta --no-plots (every statistic)": sfn_delta("--no-plots"),
    }
    if not args.no_figures:
        runs["sfn delta (every statistic + figures)"] = sfn_delta()
    if args.before:
        old = export_revision(args.before, Path(args.workdir) / "revisions")
        runs[f"sfn delta --no-plots, before ({args.before})"] = sfn_delta("--no-plots", cwd=str(old))
    if args.naive:
        runs["naive: transformers load x2 + norm loop"] = ([sys.executable, "-c", NAIVE.format(threads=threads),
                                                           str(base), str(tuned)], None)
    info = {"machine": machine(), "versions": versions()}
    rounds = []
    for k in range(max(1, args.rounds)):
        row = {}
        for name, (cmd, cwd) in runs.items():
            measure(["cat", *files])  # warm the page cache before every measured run (unmeasured)
            row[name] = measure(cmd, env, None if cmd[0] == "cat" else workdir / "last-command.log", cwd=cwd)
        rounds.append(row)
        print(f"round {k + 1}: " + ", ".join(f"{n.split(' (')[0]} {r['wall_s']:.2f}s" for n, r in row.items()), flush=True)
    info["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    reference = "norm loop (load_file x2, ||B-A|| per tensor)"
    result = {
        "benchmark": "delta_bench", "command": " ".join(["python", "benchmarks/delta_bench.py", *(argv if argv is not None else sys.argv[1:])]),
        "pair": {"size": args.size, "dims": dims, "params": params, "bytes": nbytes, "scale": args.scale,
                 "seed": "tensor i: base seed 1000+i, fine-tune noise seed 5000+i"},
        "threads": threads, "rounds": len(rounds), "shared_machine": bool(args.shared), "reference": reference,
        **info, "summary": summarize(rounds, reference), "raw_rounds": rounds,
    }
    print()
    print(render(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


if __name__ == "__main__":
    sys.exit(main())
