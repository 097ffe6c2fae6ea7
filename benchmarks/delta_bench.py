"""Benchmark ``sfn delta`` against the naive approach and against reading the files once.

Builds a synthetic base/fine-tune pair (default: Qwen2-0.5B-shaped, bf16, ~1 GB per model; written
tensor by tensor, so building needs little memory) and runs, each in its own process:

  cat       cat both checkpoints to /dev/null: the physical limit of reading them (warm page cache)
  sfn delta the Delta Stethoscope, every statistic, histograms and figures
  naive     load both models with transformers, then (B - A).norm() for every tensor of the state_dict

reporting wall time and peak RSS (ru_maxrss of the child). Example:

    python benchmarks/delta_bench.py                      # 0.5B, ~1 min to build on 2 cores
    python benchmarks/delta_bench.py --size small         # ~50M parameters, seconds
    python benchmarks/delta_bench.py --size 1.5b --layers 8 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
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


def measure(cmd: list, env=None, log: Path = None) -> dict:
    """Wall time and peak RSS of one child process (its output goes to ``log``, not into this process:
    a child's peak RSS starts at its parent's, so this process must stay small)."""
    with open(log or os.devnull, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        if log:
            sys.stderr.write(Path(log).read_text(errors="replace")[-3000:])
        raise SystemExit(f"benchmark command failed ({code}): {' '.join(map(str, cmd))}")
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="0.5b")
    p.add_argument("--layers", type=int, default=None, help="override the depth (smaller = faster to build)")
    p.add_argument("--scale", type=float, default=0.1, help="fine-tune noise, relative to each tensor's std")
    p.add_argument("--workdir", default="/tmp/sfn-delta-bench", help="where the pair is built (reused if present)")
    p.add_argument("--threads", type=int, default=None, help="threads for both tools (default: the CPUs available)")
    p.add_argument("--repeat", type=int, default=1, help="runs per approach; the fastest is reported")
    p.add_argument("--skip-naive", action="store_true",
                   help="skip the transformers approach (it needs 1.5-2x the pair in RAM)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

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
    subprocess.run([sys.executable, __file__, "--build-only", *(argv if argv is not None else sys.argv[1:])], check=True)
    base, tuned = workdir / "base", workdir / "tuned"
    files = [str(base / "model.safetensors"), str(tuned / "model.safetensors")]
    nbytes = sum(os.path.getsize(f) for f in files)
    print(f"pair: {args.size} Qwen2-shaped, {dims['num_hidden_layers']} layers, {params / 1e6:.0f}M parameters, bf16, "
          f"{nbytes / 1e9:.2f} GB in all ({'built' if built else 'reused'} in {time.perf_counter() - t0:.0f} s) "
          f"at {workdir}")

    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    out = workdir / "delta-out"
    runs = {
        "cat both files > /dev/null": ["cat", *files],
        "sfn delta (all statistics + figures)": [sys.executable, "-m", "sfn_merge_plugin.cli", "delta", str(base),
                                                 str(tuned), "-o", str(out), "--no-progress", "--threads", str(threads)],
        "sfn delta --no-plots": [sys.executable, "-m", "sfn_merge_plugin.cli", "delta", str(base), str(tuned),
                                 "-o", str(out), "--no-progress", "--no-plots", "--threads", str(threads)],
    }
    if not args.skip_naive:
        runs["naive: transformers load x2 + norm loop"] = [sys.executable, "-c", NAIVE.format(threads=threads),
                                                           str(base), str(tuned)]
    results = {}
    for _ in range(max(1, args.repeat)):
        for name, cmd in runs.items():
            measure(["cat", *files])  # warm the page cache before every measured run (unmeasured)
            r = measure(cmd, env, None if cmd[0] == "cat" else workdir / "last-command.log")
            if name not in results or r["wall_s"] < results[name]["wall_s"]:
                results[name] = r
    print("\n| approach | wall time (s) | peak RSS (MB) | read rate (GB/s) |\n|---|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['wall_s']:.2f} | {r['peak_rss_mb']:.0f} | {nbytes / r['wall_s'] / 1e9:.2f} |")
    print(f"\n{threads} threads; {params / 1e6:.0f}M parameters per model; warm page cache; best of {args.repeat}.")
    if args.json:
        Path(args.json).write_text(json.dumps({"size": args.size, "dims": dims, "params": params, "bytes": nbytes,
                                               "threads": threads, "results": results}, indent=1))
    return 0


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


if __name__ == "__main__":
    sys.exit(main())
