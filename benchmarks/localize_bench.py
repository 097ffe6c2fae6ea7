"""sfn localize and destruction-sweep speed on real pairs: cells per minute and peak RSS against model size.

    python benchmarks/localize_bench.py --pairs lab              # the lab's two pairs (smoke size: seconds to build)
    python benchmarks/localize_bench.py --pairs smollm2          # SmolLM2-135M-Instruct + a short CPU fine-tune of it
    python benchmarks/localize_bench.py --pairs lab,smollm2 --sweep --json benchmarks/results/localize_bench_cpu.json

Each map runs as `sfn localize` in its own process, so its peak RSS (ru_maxrss, written into map.json) is that
run's alone. The SmolLM2 "tune" is 2-digit addition answered as \\boxed{sum}, trained here for --ft-steps on the
CPU (cached): a pretrained model, a small relative change. --sweep times the destruction sweep's generation
on SmolLM2 with the old stack (a copy of the pre-engine sweep/generate.py code, below) and the shared stack
(hf_backend.generate_ids), side by side in one process, as cells per minute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(os.environ.get("SFN_BENCH_CACHE", Path.home() / ".cache" / "sfn" / "localize-bench"))


# ----------------------------------------------------------------------------------------------- the pairs


def lab_pairs(cache: Path) -> dict:
    """The lab's new_circuit and skill pairs at the --smoke size (the full size takes ~1 h on 2 cores)."""
    from sfn_merge_plugin.lab.pairs import SMOKE, build_pairs

    pairs = build_pairs(cache / "lab", seed=0, recipes=SMOKE, progress=False)
    return {f"lab-{name}": (str(p.base.path), str(p.reasoning.path)) for name, p in pairs.items()}


def addition_problems(n: int, seed: int) -> list:
    rng = random.Random(f"sfn-localize-bench-{seed}")
    return [(a, b) for a, b in ((rng.randrange(10, 100), rng.randrange(10, 100)) for _ in range(n))]


def prompt_of(a: int, b: int) -> str:
    return f"What is {a}+{b}? Put the answer in \\boxed{{}}."


def write_task(path: Path, n: int = 64) -> str:
    with open(path, "w") as f:
        for a, b in addition_problems(n, seed=1):  # seed 1: never the training problems (seed 0)
            f.write(json.dumps({"prompt": prompt_of(a, b), "answer": str(a + b), "kind": "math"}) + "\n")
    return str(path)


def smollm2_pair(cache: Path, steps: int, threads: int, lr: float) -> tuple:
    """(SmolLM2 folder, its fine-tune): ``steps`` of AdamW on answers "\\boxed{a+b}", loss on the answer only."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sfn_merge_plugin.smollm2 import smollm2_path

    base = smollm2_path()
    out = cache / f"smollm2-add-{steps}-{lr:g}"
    if (out / "model.safetensors").is_file():
        return base, str(out)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    train = addition_problems(steps * 8, seed=0)
    t0 = time.perf_counter()
    for step in range(steps):
        batch = train[step * 8:(step + 1) * 8]
        seqs, masks = [], []
        for a, b in batch:
            prompt = tok.apply_chat_template([{"role": "user", "content": prompt_of(a, b)}], tokenize=False,
                                             add_generation_prompt=True)
            p = tok(prompt, add_special_tokens=False)["input_ids"]
            ans = tok(f"\\boxed{{{a + b}}}<|im_end|>", add_special_tokens=False)["input_ids"]
            seqs.append(p + ans)
            masks.append([0] * len(p) + [1] * len(ans))
        width = max(map(len, seqs))
        ids = torch.tensor([s + [tok.pad_token_id or 0] * (width - len(s)) for s in seqs])
        att = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        labels = torch.tensor([[t if m else -100 for t, m in zip(s, mk)] + [-100] * (width - len(s))
                               for s, mk in zip(seqs, masks)])
        loss = model(input_ids=ids, attention_mask=att, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 2 == 0:
            print(f"  fine-tune step {step}/{steps}: loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    model.eval()
    tmp = cache / f".{out.name}.tmp"
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, out)
    return base, str(out)


# -------------------------------------------------------------------------------------------------- maps


def run_map(name: str, base: str, tuned: str, task: str, args, out_root: Path) -> dict:
    out = out_root / name
    cmd = [sys.executable, "-m", "sfn_merge_plugin.cli", "localize", base, tuned, "--task", task, "-o", str(out),
           "--force", "--modules", args.modules, "--window", str(args.window), "--problems", str(args.problems),
           "--max-new-tokens", str(args.max_new_tokens), "--chat-prompts", str(args.chat_prompts),
           "--chat-tokens", str(args.chat_tokens), "--device", "cpu", "--no-progress"]
    if args.consistency:
        cmd.append("--consistency")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name}: sfn localize failed:\n{proc.stderr[-3000:]}")
    doc = json.loads((out / "map.json").read_text())
    t = doc["timing"]
    print(f"{name}: {t['cells']} cells, {t['cells_per_minute']:.2f} cells/min, peak RSS "
          f"{t['peak_rss_bytes'] / 2**20:.0f} MiB vs model {t['model_bytes'] / 2**20:.0f} MiB", file=sys.stderr)
    return {"command": " ".join(cmd[1:]), "wall_s": wall, "timing": t, "base_accuracy": doc["base_accuracy"],
            "tuned_accuracy": doc["tuned_accuracy"], "gap": doc["gap"], "consistency": doc["consistency"],
            "summary": doc["summary"],
            "o_proj": [{k: c[k] for k in ("direction", "layers", "accuracy", "share", "share_ci_low", "share_ci_high", "level")}
                       for c in doc["cells"] if c["module"] == "o_proj"]}


# ------------------------------------------------------------------------------------------- sweep speed


def legacy_generate(model, tokenizer, prompt_ids, max_new_tokens, batch_size):
    """The sweep's generation before the shared stack (sweep/generate.py at commit 75e885f), greedy path."""
    import torch
    from transformers import GenerationConfig

    ids_ = model.generation_config.eos_token_id
    stops = [] if ids_ is None else ([ids_] if isinstance(ids_, int) else list(ids_))
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in stops:
        stops.append(tokenizer.eos_token_id)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, top_k=None, pad_token_id=pad,
                              eos_token_id=stops or None)
    out = []
    for start in range(0, len(prompt_ids), batch_size):
        batch = prompt_ids[start:start + batch_size]
        width = max(len(p) for p in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, p in enumerate(batch):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        for row in gen[:, width:].tolist():
            cut = next((j for j, t in enumerate(row) if t in stops), len(row))
            out.append(row[:cut])
    return out


def sweep_speed(base: str, args) -> dict:
    """Cells/min of the sweep's generation (built-in prompts, --sweep-tokens) on the old and the shared stack."""
    import torch

    from sfn_merge_plugin.evaluation.hf_backend import generate_ids
    from sfn_merge_plugin.sweep.apply import Destruction, destroyed_model
    from sfn_merge_plugin.sweep.generate import render
    from sfn_merge_plugin.sweep.prompts import BUILTIN
    from sfn_merge_plugin.sweep.runner import load

    torch.set_num_threads(args.threads)
    model, tok = load(base, device="cpu")
    prompt_ids = [render(tok, p.text, True) for p in BUILTIN[: args.sweep_prompts]]
    cells = [None, Destruction("o_proj", "zero", "5-12"), Destruction("mlp", "reinit", "5-12")]
    rows = {}
    for name, fn in (("before", lambda: legacy_generate(model, tok, prompt_ids, args.sweep_tokens, 16)),
                     ("after", lambda: [o.token_ids for o in generate_ids(model, tok, prompt_ids, args.sweep_tokens, batch_size=16)])):
        t0, tokens = time.perf_counter(), 0
        for d in cells:
            if d is None:
                tokens += sum(map(len, fn()))
            else:
                with destroyed_model(model, d):
                    tokens += sum(map(len, fn()))
        s = time.perf_counter() - t0
        rows[name] = {"seconds": s, "cells": len(cells), "cells_per_minute": len(cells) / s * 60, "response_tokens": tokens}
        print(f"sweep generation {name}: {rows[name]['cells_per_minute']:.2f} cells/min", file=sys.stderr)
    rows["ratio"] = rows["after"]["cells_per_minute"] / rows["before"]["cells_per_minute"]
    # where a whole sweep's time goes: its cells (generation + fingerprints) vs grading the levels afterwards
    from sfn_merge_plugin.sweep.generate import Decoding
    from sfn_merge_plugin.sweep.runner import run_sweep

    t0 = time.perf_counter()
    run_sweep(model, "o_proj,mlp", "zero", "5-12", tokenizer=tok, prompts=list(BUILTIN[: args.sweep_prompts]),
              decoding=Decoding(max_new_tokens=args.sweep_tokens), progress=False)
    total = time.perf_counter() - t0
    gen = rows["after"]["seconds"] / len(cells) * 3
    rows["full_sweep_3_cells"] = {"seconds": total, "cells_per_minute": 3 / total * 60,
                                  "generation_seconds_estimate": gen, "grading_share_estimate": max(0.0, 1 - gen / total)}
    rows["setup"] = {"model": base, "prompts": len(prompt_ids), "max_new_tokens": args.sweep_tokens,
                     "cells": ["intact", "zero(o_proj)@5-12", "reinit(mlp)@5-12"]}
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", default="lab,smollm2", help="lab, smollm2 or both (default: %(default)s)")
    p.add_argument("--modules", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,norm")
    p.add_argument("--window", type=int, default=0, help="layers per cell (default: 1 for lab, 10 for SmolLM2)")
    p.add_argument("--problems", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=0, help="default: 40 for lab, 12 for SmolLM2")
    p.add_argument("--chat-prompts", type=int, default=4)
    p.add_argument("--chat-tokens", type=int, default=24)
    p.add_argument("--consistency", action="store_true", help="also run the all-modules cells")
    p.add_argument("--ft-steps", type=int, default=12, help="SmolLM2 fine-tune steps (batch 8)")
    p.add_argument("--ft-lr", type=float, default=1e-4, help="SmolLM2 fine-tune learning rate")
    p.add_argument("--smollm2-tuned", metavar="DIR",
                   help="use this fine-tune of SmolLM2 (e.g. the lab's smollm2_sft stage) instead of training one")
    p.add_argument("--smollm2-task", default=None, help="task for the SmolLM2 map (default: addition JSONL; chain with --smollm2-tuned)")
    p.add_argument("--sweep", action="store_true", help="also time the sweep's generation before/after (SmolLM2)")
    p.add_argument("--sweep-prompts", type=int, default=10)
    p.add_argument("--sweep-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(CACHE / "maps"), help="where the maps are written")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    import torch
    import transformers

    CACHE.mkdir(parents=True, exist_ok=True)
    out_root = Path(args.out)
    wanted = [x.strip() for x in args.pairs.split(",")]
    results = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                           "transformers": transformers.__version__, "threads": args.threads, "cpus": os.cpu_count(),
                           "note": "shared machine (~8 concurrent jobs on 2 cores): compare ratios within one run"},
               "argv": sys.argv[1:], "maps": {}}
    if "lab" in wanted:
        task = "chain"
        for name, (base, tuned) in lab_pairs(CACHE).items():
            a = argparse.Namespace(**{**vars(args), "window": args.window or 1, "max_new_tokens": args.max_new_tokens or 40})
            results["maps"][name] = run_map(name, base, tuned, task, a, out_root)
    if "smollm2" in wanted or args.sweep:
        t0 = time.perf_counter()
        if args.smollm2_tuned:
            from sfn_merge_plugin.smollm2 import smollm2_path

            base, tuned = smollm2_path(), args.smollm2_tuned
            stage = Path(tuned) / "sfn_lab_stage.json"
            results["smollm2_finetune"] = {"given": tuned, "lab_stage": json.loads(stage.read_text()) if stage.is_file() else None}
        else:
            base, tuned = smollm2_pair(CACHE, args.ft_steps, args.threads, args.ft_lr)
            results["smollm2_finetune"] = {"steps": args.ft_steps, "batch": 8, "lr": args.ft_lr, "seconds_or_cached": time.perf_counter() - t0}
        if "smollm2" in wanted:
            task = args.smollm2_task or ("chain" if args.smollm2_tuned else write_task(CACHE / "addition.jsonl"))
            a = argparse.Namespace(**{**vars(args), "window": args.window or 10, "max_new_tokens": args.max_new_tokens or 12})
            name = "smollm2-" + (Path(task).stem if task.endswith(".jsonl") else task)
            results["maps"][name] = run_map(name, base, tuned, task, a, out_root)
        if args.sweep:
            results["sweep_generation"] = sweep_speed(base, args)
    text = json.dumps(results, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
