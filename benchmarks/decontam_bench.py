"""Decontamination speed: `sfn data decontaminate` on a synthetic 100k-row training file, side by side.

The benchmark side has the real sizes of SfN's three sets (AIME24 30 items of ~70 words, MATH-500 500 of ~40,
GPQA-Diamond 198 of ~120), made of random words and LaTeX (no real item), written in the hub schema to an
SFN_DATA_DIR so the run loads them through the lm-eval loaders, as a user's run would. The training file
holds prompt/completion rows (question ~60 words, completion ~1,000 characters); a known set of rows copies
an item exactly or shares one 8-gram with it, so the run also checks that it finds exactly those.

Timed in one process, in this order, on the same file:
  cat        reading the file (``cat FILE > /dev/null``): the disk floor
  json       ``json.loads`` of every line: the floor of any Python pass over the rows
  sfn        the whole command, end to end (index, streaming, normalisation, writing, report)
  naive      every row against every item's n-gram set, on --naive-rows rows (extrapolated as rows/s)
Wall-clock rows/s depend on what else runs; rows per CPU-second (also written) less so.

  python benchmarks/decontam_bench.py                    # writes benchmarks/results/decontam_bench.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time

SIZES = {"aime24": (30, 70), "math500": (500, 40), "gpqa_diamond": (198, 120)}  # items, words per item
LATEX = ["$x^2$", "$\\frac{1}{2}$", "$\\sqrt{3}$", "$\\pi$", "$a_n$", "$\\binom{8}{4}$", "$2^{10}$", "$\\le$"]


def vocabulary(rng, size=20000):
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(size)]


def text(rng, vocab, cum_weights, n_words):
    words = rng.choices(vocab, cum_weights=cum_weights, k=n_words)
    for i in range(0, n_words, 12):
        words[i] = rng.choice(LATEX)
    return " ".join(words).capitalize() + "?"


def make_data(folder, rows, seed, plant_every):
    """Benchmark files in the hub schema, the training file, and the planted (row -> item) copies."""
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    weights = list(itertools.accumulate(1 / (r + 10) for r in range(len(vocab))))  # Zipf-like, as real text
    items = {}
    evals = os.path.join(folder, "evals")
    os.makedirs(evals)
    for name, (count, n_words) in SIZES.items():
        items[name] = [(f"madeup-{name}-{i}", text(rng, vocab, weights, rng.randint(n_words // 2, n_words * 3 // 2)))
                       for i in range(count)]
        with open(os.path.join(evals, f"{name}.jsonl"), "w") as f:
            for item_id, t in items[name]:
                if name == "aime24":
                    row = {"ID": item_id, "Problem": t, "Answer": 1}
                elif name == "math500":
                    row = {"problem": t, "answer": "1", "unique_id": item_id}
                else:
                    row = {"Question": t, "Correct Answer": "a", "Incorrect Answer 1": "b", "Incorrect Answer 2": "c",
                           "Incorrect Answer 3": "d", "Record ID": item_id}
                f.write(json.dumps(row) + "\n")
    planted = {}
    flat = [(name, item_id, t) for name, its in items.items() for item_id, t in its]
    train = os.path.join(folder, "train.jsonl")
    with open(train, "w") as f:
        for line in range(1, rows + 1):
            question = text(rng, vocab, weights, 60)
            if line % plant_every == 0:
                name, item_id, t = rng.choice(flat)
                if (line // plant_every) % 2:
                    question = t.upper()  # an exact copy, other case
                else:  # one 8-gram of the item inside a new question
                    w = t.split()
                    start = rng.randrange(0, len(w) - 8)
                    question = "Reworded: " + " ".join(w[start:start + 8]) + " " + question
                planted[line] = (name, item_id)
            completion = text(rng, vocab, weights, 160)
            f.write(json.dumps({"prompt": [{"role": "user", "content": question}],
                                "completion": [{"role": "assistant", "content": completion}]}) + "\n")
    return train, evals, planted


def time_cat(path):
    t = time.perf_counter()
    subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def time_json(path):
    t, cpu = time.perf_counter(), time.process_time()
    with open(path, encoding="utf-8") as f:
        for line in f:
            json.loads(line)
    return time.perf_counter() - t, time.process_time() - cpu


def time_naive(path, evals, n_rows, n=8):
    """The obvious loop: each row's n-grams against each item's n-gram set, one item after another."""
    from sfn_merge_plugin.data.benchmarks import load_benchmarks
    from sfn_merge_plugin.data.normalize import ngrams, words

    item_sets = [ngrams(words(t), n) for b in load_benchmarks(list(SIZES)) for _, t in b.items]
    t = time.perf_counter()
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i == n_rows:
                break
            grams = ngrams(words(json.loads(line)["prompt"][0]["content"]), n)
            any(grams & s for s in item_sets)
    return time.perf_counter() - t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000, help="training rows (default: %(default)s)")
    p.add_argument("--naive-rows", type=int, default=2_000, help="rows timed for the naive loop (default: %(default)s)")
    p.add_argument("--plant-every", type=int, default=500, help="every Nth row copies an item (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "decontam_bench.json"))
    args = p.parse_args(argv)

    from sfn_merge_plugin.cli import main as sfn

    with tempfile.TemporaryDirectory(prefix="sfn-decontam-bench-") as folder:
        train, evals, planted = make_data(folder, args.rows, args.seed, args.plant_every)
        size = os.path.getsize(train)
        cat_s, (json_s, json_cpu) = time_cat(train), time_json(train)
        os.environ["SFN_DATA_DIR"] = evals
        out = os.path.join(folder, "clean.jsonl")
        t, cpu = time.perf_counter(), time.process_time()
        assert sfn(["data", "decontaminate", train, "-o", out]) == 0
        sfn_s, sfn_cpu = time.perf_counter() - t, time.process_time() - cpu
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        with open(out.replace(".jsonl", ".decontam.json")) as f:
            report = json.load(f)
        found = {r["row"]: {(m["benchmark"], m["item"]) for m in r["matches"]} for r in report["removed"]}
        naive_s = time_naive(train, evals, args.naive_rows)
    exact = all(planted[row] in found.get(row, set()) for row in planted)
    result = {
        "command": " ".join(["python benchmarks/decontam_bench.py", *(argv if argv is not None else sys.argv[1:])]),
        "seed": args.seed,
        "threads": 1,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared with other jobs",
        "versions": {"python": platform.python_version(), "sfn": __import__("sfn_merge_plugin").__version__},
        "training_rows": args.rows,
        "training_file_mb": round(size / 2**20, 1),
        "benchmark_items": {k: v[0] for k, v in SIZES.items()},
        "ngram": report["ngram"],
        "planted_copies": len(planted),
        "planted_found": sum(planted[row] in found.get(row, set()) for row in planted),
        "rows_removed": report["rows_removed"],
        "all_planted_found_and_nothing_else": exact and len(found) == len(planted),
        "seconds": {"cat": round(cat_s, 3), "json": round(json_s, 3), "sfn": round(sfn_s, 3),
                    "naive_on_naive_rows": round(naive_s, 3)},
        "rows_per_second": {"cat": round(args.rows / cat_s), "json": round(args.rows / json_s),
                            "sfn": round(args.rows / sfn_s), "naive": round(args.naive_rows / naive_s)},
        "cpu_seconds": {"json": round(json_cpu, 3), "sfn": round(sfn_cpu, 3)},
        "rows_per_cpu_second": {"json": round(args.rows / json_cpu), "sfn": round(args.rows / sfn_cpu)},
        "sfn_vs_naive_speedup": round((args.rows / sfn_s) / (args.naive_rows / naive_s), 1),
        "sfn_time_over_json_time": round(sfn_s / json_s, 2),
        "peak_rss_mb": round(peak_mb),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(json.dumps(result, indent=1))
    return 0 if result["all_planted_found_and_nothing_else"] else 1


if __name__ == "__main__":
    sys.exit(main())
