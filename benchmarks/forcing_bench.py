"""Budget-forcing overhead: `sfn-hf` with "Wait" forcing against plain `model.generate` of exactly the same
number of model tokens per row, in one process, repeats alternated, best of N.

    python benchmarks/forcing_bench.py --json benchmarks/results/forcing_bench.json
    python benchmarks/forcing_bench.py --render benchmarks/results/forcing_bench.json   # the Markdown table
    python benchmarks/forcing_bench.py --model thinker --repeat 3                     # quick, tiny random model

Contenders, all greedy, on the same chat-template math prompts:
- ``sfn-hf``: lm-eval's ``SfnHFLM.generate_until`` (the real path: ``run_generate_until`` ->
  ``generate_with_budget`` -> ``HFBackend``), preset ``plain`` on SmolLM2 (EOS ends the thinking, so the
  model is forced on with "Wait" x ``--n-ignore``), micro-batch ``--batch-size``.
- ``sfn-hf, KV cache not reused``: the same loop on an ``HFBackend(keep_cache_bytes=0)``: every forcing round
  re-prefills prompt + thinking so far (the implementation before the cache was kept between rounds).
- ``plain generate``: one ``model.generate`` per micro-batch (same batching and left padding), KV cache,
  ``min_new_tokens = max_new_tokens =`` the number of tokens the model produced for that row under forcing
  (its thinking and answer tokens plus the end tokens the loop dropped; inserted "Wait"s excluded). With
  ``--batch-size 1`` (the default) that is exactly the same work per row; with larger batches a micro-batch
  runs to its longest row (said in the JSON).

The forced outputs of both sfn-hf contenders must be token-identical (asserted). Where the time goes comes
from forward hooks in the timed runs (prefill forwards / decode forwards / the rest: Python in
generate, stopping criteria, tokenizer calls) and, with ``--py-spy``, from a py-spy profile of the sfn-hf path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

PROMPTS = [  # short math questions: SmolLM2 answers and ends its turn, so "Wait" has something to force
    "What is 12 + 30? Answer briefly.",
    "Compute 7 * 8. Answer briefly.",
    "What is 144 divided by 12? Answer briefly.",
    "Solve for x: 2x + 3 = 11. Answer briefly.",
    "What is 15% of 80? Answer briefly.",
    "What is the square root of 81? Answer briefly.",
    "How many minutes are in 3 hours? Answer briefly.",
    "What is 9 squared minus 1? Answer briefly.",
]
GEN_UNTIL = ["\nProblem:", "\nAnswer the following multiple choice question", "<|im_end|>", "<|endoftext|>"]


def load(args):
    """(lm-eval SfnHFLM, preset) for ``--model``."""
    from sfn_merge_plugin.evaluation.lm_eval_models import SfnHFLM

    if args.model == "smollm2":
        from sfn_merge_plugin.smollm2 import smollm2_path

        path, preset = str(smollm2_path()), "plain"
    else:
        from sfn_merge_plugin.evaluation.tiny_thinker import build_tiny_thinker

        # sampled-looking behaviour under greedy: </think> and EOS logits near the others, so rounds have length
        path = build_tiny_thinker(tempfile.mkdtemp(prefix="sfn-forcing-bench-"), think_logit=0.6, eos_logit=0.3,
                                  num_hidden_layers=4, hidden_size=256, intermediate_size=512)
        preset = "r1"
    lm = SfnHFLM(pretrained=path, bf_preset=preset, device="cpu", dtype="float32", batch_size=args.batch_size,
                 thinking_n_ignore=args.n_ignore, max_tokens_thinking=args.thinking, max_tokens_answer=args.answer)
    return lm, preset, path


def requests_for(lm, prompts, until):
    from lm_eval.api.instance import Instance

    gen_kwargs = {"until": list(until), "do_sample": False, "max_gen_toks": 4096}
    contexts = [lm.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True) for p in prompts]
    return [Instance("generate_until", {}, (c, dict(gen_kwargs)), i) for i, c in enumerate(contexts)]


def forced_run(lm, requests, keep_cache_bytes=None):
    """sfn-hf's generate_until; with ``keep_cache_bytes`` the same loop on a backend built with that setting."""
    if keep_cache_bytes is None:
        return lm.generate_until(requests, disable_tqdm=True)
    from sfn_merge_plugin.evaluation.hf_backend import HFBackend
    from sfn_merge_plugin.evaluation.lm_eval_models import hf_batch_size, run_generate_until

    backend = HFBackend(lm.model, lm.tokenizer, batch_size=hf_batch_size(lm), keep_cache_bytes=keep_cache_bytes)
    return run_generate_until(lm, requests, backend, lm._sfn_options, disable_tqdm=True)


def count_model_tokens(lm, requests):
    """Per row: the tokens the model sampled over every backend call (stop tokens included), the calls
    (rounds + answer phase), and the ForcedGeneration token ids, from one recorded run."""
    from sfn_merge_plugin.evaluation import budget_forcing
    from sfn_merge_plugin.evaluation.hf_backend import HFBackend

    prompts = [list(lm.tok_encode(r.args[0])) for r in requests]
    sampled, calls, results = [0] * len(prompts), [0] * len(prompts), []
    original_generate, original_loop = HFBackend.generate, budget_forcing.generate_with_budget

    def recording_generate(self, batch, *a, **k):
        outs = original_generate(self, batch, *a, **k)
        for prompt, out in zip(batch, outs):
            row = next(i for i, p in enumerate(prompts) if prompt[:len(p)] == p)
            sampled[row] += len(out.token_ids) + (out.stop_token_id is not None)
            calls[row] += 1
        return outs

    def recording_loop(*a, **k):
        results.extend(original_loop(*a, **k))
        return results

    from sfn_merge_plugin.evaluation import lm_eval_models

    HFBackend.generate, lm_eval_models.generate_with_budget = recording_generate, recording_loop
    try:
        texts = forced_run(lm, requests)
    finally:
        HFBackend.generate, lm_eval_models.generate_with_budget = original_generate, original_loop
    return prompts, sampled, calls, results, texts


def plain_run(lm, prompts, counts, batch_size):
    """Plain greedy ``model.generate`` of exactly ``counts[i]`` new tokens (min = max), length-sorted micro-batches."""
    import torch

    from sfn_merge_plugin.evaluation.hf_backend import blank_generation_config

    model, pad = lm.model, lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    made = {}
    for k in range(0, len(order), batch_size):
        chunk = order[k:k + batch_size]
        width, limit = max(len(prompts[i]) for i in chunk), max(counts[i] for i in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]):] = 1
        with torch.no_grad(), blank_generation_config(model):
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=limit, min_new_tokens=limit,
                                 do_sample=False, pad_token_id=pad)
        for row, i in enumerate(chunk):
            made[i] = out.shape[1] - width
    return [made[i] for i in range(len(prompts))]


class ForwardClock:
    """Forward hooks on the model: wall time in prefill forwards (more than one new token) and decode forwards."""

    def __init__(self, model):
        self.model, self.time, self.count, self.tokens = model, Counter(), Counter(), Counter()

    def __enter__(self):
        def pre(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            self._kind = "prefill" if ids is not None and ids.shape[1] > 1 else "decode"
            self._n = int(ids.numel()) if ids is not None else 0
            self._t = time.perf_counter()

        def post(module, args, kwargs, output):
            self.time[self._kind] += time.perf_counter() - self._t
            self.count[self._kind] += 1
            self.tokens[self._kind] += self._n

        self.hooks = [self.model.register_forward_pre_hook(pre, with_kwargs=True),
                      self.model.register_forward_hook(post, with_kwargs=True)]
        return self

    def __exit__(self, *exc):
        for h in self.hooks:
            h.remove()

    def summary(self, wall: float) -> dict:
        prefill, decode = self.time["prefill"], self.time["decode"]
        return {"wall_s": wall, "prefill_forward_s": prefill, "decode_forward_s": decode,
                "outside_forward_s": wall - prefill - decode, "prefill_forwards": self.count["prefill"],
                "prefill_input_tokens": self.tokens["prefill"], "decode_forwards": self.count["decode"]}


def timed(fn):
    t = time.perf_counter()
    value = fn()
    return time.perf_counter() - t, value


def py_spy_summary(args) -> dict:
    """py-spy (idle frames off) over a child that runs only the sfn-hf path: self time by function, top 15,
    and the share under stopping criteria, tokenizer decode, generate's Python and the model's forward."""
    raw = Path(tempfile.mkdtemp(prefix="sfn-forcing-pyspy-")) / "profile.txt"
    child = [sys.executable, __file__, "--only-forced", "--model", args.model, "--batch-size", str(args.batch_size),
             "--thinking", str(args.thinking), "--answer", str(args.answer), "--n-ignore", str(args.n_ignore),
             "--threads", str(args.threads), "--repeat", "2"] + (["--until-gen"] if args.until_gen else [])
    py_spy = str(Path(sys.executable).with_name("py-spy"))
    subprocess.run([py_spy, "record", "--format", "raw", "--rate", "50", "--nonblocking", "-o", str(raw), "--", *child],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    own, under, total = Counter(), Counter(), 0
    groups = {  # a sample counts in a group when any frame of its stack matches (function, path part)
        "model forward (torch)": ("", "transformers/models/"),
        "KV cache kept between rounds (kv_reuse)": ("", "evaluation/kv_reuse.py"),
        "stop-string criterion": ("__call__", "evaluation/hf_backend.py"),
        "tokenizer encode/decode": ("", "transformers/tokenization"),
        "stop_string_cut": ("stop_string_cut", "evaluation/budget_forcing.py"),
    }

    def frame_of(frame: str) -> tuple[str, str]:
        name, _, where = frame.partition(" (")
        return name, where.rsplit(":", 1)[0]

    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        n, frames = int(n), [frame_of(f) for f in stack.split(";")]
        if not any(f == "forced_run" for f, _ in frames):
            continue  # model loading, imports
        total += n
        name, where = frames[-1]
        own[f"{name} ({where.split('site-packages/')[-1]})"] += n
        for group, (fn, part) in groups.items():
            if any(part in w and (not fn or f == fn) for f, w in frames):
                under[group] += n
        if any("transformers/generation/" in w for _, w in frames) and not any("transformers/models/" in w for _, w in frames):
            under["generate's Python outside the forward"] += n
    return {"samples": total, "share_under": {k: v / max(1, total) for k, v in under.items()},
            "top_self": [[k, v / max(1, total)] for k, v in own.most_common(12)],
            "command": " ".join(["py-spy record --format raw --rate 50 --nonblocking --", *child[1:]])}


def at_plain_decode_speed(doc: dict, name: str) -> float:
    """Overhead with the decode forwards charged at plain generate's measured time per decode forward: the
    decode work is the same size in every contender, so on a shared machine this strips the load's noise
    from it and leaves what forcing adds (re-prefill, Python around the forward)."""
    b, plain = doc["breakdown"][name], doc["breakdown"]["plain generate"]
    per_step = plain["decode_forward_s"] / max(1, plain["decode_forwards"])
    wall = b["wall_s"] - b["decode_forward_s"] + per_step * b["decode_forwards"]
    return wall / plain["wall_s"] - 1


def render(doc: dict) -> str:
    r = doc["results"]
    lines = [f"Budget forcing overhead: {doc['model']}, {doc['n_prompts']} prompts, preset {doc['preset']}, "
             f"Wait x{doc['n_ignore']}, thinking budget {doc['thinking_budget']}, answer {doc['answer_budget']}, "
             f"micro-batch {doc['batch_size']}, {doc['threads']} thread(s), best of {doc['repeat']}",
             "", "| contender | wall s | model tokens | tokens/s | overhead vs plain | prefill fwd s | decode fwd s | "
             "outside fwd s | overhead at plain's decode speed |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, v in r.items():
        b = doc["breakdown"].get(name, {})
        lines.append(f"| {name} | {v['wall_s']:.2f} | {v['model_tokens']} | {v['tokens_per_s']:.1f} | "
                     f"{v['overhead']:+.1%} | {b.get('prefill_forward_s', 0):.2f} | {b.get('decode_forward_s', 0):.2f} | "
                     f"{b.get('outside_forward_s', 0):.2f} | {at_plain_decode_speed(doc, name):+.1%} |")
    rounds = Counter(doc["calls_per_row"])
    lines += ["", f"Forced continuations per row: {doc['forced_per_row']} (total {sum(doc['forced_per_row'])}); backend "
              f"calls per row: {dict(sorted(rounds.items()))}; model tokens per row: {doc['model_tokens_per_row']}; "
              f"forced outputs token-identical with and without KV reuse: {doc['identical']}.",
              f"`{doc['command']}` ({doc['machine']})"]
    if doc.get("py_spy"):
        spy = doc["py_spy"]
        lines += ["", f"py-spy, sfn-hf path only ({spy['samples']} samples): share of time under "
                  + ", ".join(f"{k} {v:.1%}" for k, v in spy["share_under"].items())]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("smollm2", "thinker"), default="smollm2",
                   help="smollm2: SmolLM2-135M-Instruct, preset plain (default); thinker: the tiny random r1 thinker")
    p.add_argument("--prompts", type=int, default=8, help=f"how many of the {len(PROMPTS)} built-in prompts (default 8)")
    p.add_argument("--batch-size", type=int, default=1, help="sfn-hf micro-batch, also used by plain generate (default 1)")
    p.add_argument("--thinking", type=int, default=64, help="max_tokens_thinking (default 64)")
    p.add_argument("--answer", type=int, default=16, help="max_tokens_answer (default 16)")
    p.add_argument("--n-ignore", type=int, default=2, help="thinking_n_ignore: forced 'Wait's (default 2)")
    p.add_argument("--until-gen", action="store_true", help="the *_gen tasks' stop strings (default: none, as the chat tasks)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument("--repeat", type=int, default=3, help="alternated repeats; the fastest of each is kept (default 3)")
    p.add_argument("--py-spy", action="store_true", help="also profile the sfn-hf path with py-spy (a second process)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--render", metavar="JSON", default=None, help="print the Markdown table of a results file and exit")
    p.add_argument("--only-forced", action="store_true", help=argparse.SUPPRESS)  # the py-spy child
    args = p.parse_args(argv)
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    lm, preset, path = load(args)
    requests = requests_for(lm, PROMPTS[:args.prompts], GEN_UNTIL if args.until_gen else [])
    if args.only_forced:
        for _ in range(args.repeat):
            forced_run(lm, requests)
        return 0

    prompts, counts, calls, gens, reference = count_model_tokens(lm, requests)
    contenders = {"sfn-hf (forcing)": lambda: forced_run(lm, requests),
                  "sfn-hf (forcing), KV cache not reused": lambda: forced_run(lm, requests, keep_cache_bytes=0),
                  "plain generate": lambda: plain_run(lm, prompts, counts, args.batch_size)}
    best, detail = {}, {}
    for rep in range(args.repeat):
        names = list(contenders) if rep % 2 == 0 else list(contenders)[::-1]
        for name in names:
            with ForwardClock(lm.model) as clock:
                wall, out = timed(contenders[name])
            if name.startswith("sfn-hf"):  # greedy: token-identical with and without the kept KV cache
                assert out == reference, f"{name}: the forced outputs differ from the first run's"
            elif args.batch_size == 1:
                assert out == counts, (out, counts)
            print(f"repeat {rep + 1}/{args.repeat}: {name}: {wall:.2f} s", flush=True)
            if name not in best or wall < best[name]:
                best[name], detail[name] = wall, clock.summary(wall)
    identical = True  # asserted above
    total = sum(counts)
    plain = best["plain generate"]
    results = {name: {"wall_s": w, "model_tokens": total, "tokens_per_s": total / w, "overhead": w / plain - 1}
               for name, w in best.items()}
    import lm_eval
    import transformers

    doc = {"command": "python benchmarks/forcing_bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "model": "SmolLM2-135M-Instruct (float32)" if args.model == "smollm2" else "tiny thinker (random Qwen2)",
           "model_path": path, "preset": preset, "n_prompts": len(prompts), "prompts": PROMPTS[:args.prompts],
           "until": GEN_UNTIL if args.until_gen else [], "n_ignore": args.n_ignore, "thinking_budget": args.thinking,
           "answer_budget": args.answer, "batch_size": args.batch_size,
           "plain_batching": "one generate per row (exact counts)" if args.batch_size == 1 else
           "length-sorted micro-batches, each run to its longest row's count",
           "threads": args.threads, "repeat": args.repeat, "prompt_tokens_per_row": [len(q) for q in prompts],
           "model_tokens_per_row": counts, "calls_per_row": calls,
           "forced_per_row": [g.forced_continuations for g in gens],
           "generated_tokens_per_row": [g.generated_tokens for g in gens],
           "budget_exhausted_per_row": [g.budget_exhausted for g in gens],
           "identical": identical, "results": results, "breakdown": detail,
           "texts": [g.text for g in gens],
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs shared with other jobs (compare ratios from one run)",
           "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "lm_eval": lm_eval.__version__, "date": time.strftime("%Y-%m-%d"), "seed": "greedy (no sampling)"}
    if args.py_spy:
        doc["py_spy"] = py_spy_summary(args)
    print(render(doc))
    if args.json:
        from sfn_merge_plugin.outputs import atomic_write_json

        atomic_write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
