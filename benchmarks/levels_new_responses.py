"""Fresh SmolLM2 responses from destroyed cells, for hand labelling (a check of the level grader on prompts,
cells and layer ranges its rules were never tuned on).

    python benchmarks/levels_new_responses.py -o /tmp/new_responses.jsonl

Greedy, 40 new tokens, the chat template, on the sweep's own machinery (``destroyed_model``, ``generate``):
each (prompt, cell, response) once; responses identical to one already written are skipped. The lines have
no level: label them by the paper's definitions before looking at any grader output.
"""

from __future__ import annotations

import argparse
import json
import sys

PROMPTS = (  # none of them is a built-in sweep prompt or a calibration prompt
    ("Describe your ideal weekend in a few sentences.", None),
    ("What are the main causes of climate change?", None),
    ("How does a bicycle work?", None),
    ("Suggest a name for a new coffee shop and explain why.", None),
    ("Tell me a fun fact about octopuses.", None),
    ("What is 8 times 7? Put the final answer in \\boxed{}.", "56"),
)
CELLS = (  # (modules, method, layers): other ranges and methods than the labelled set's 2-4, 5-12, 20-27
    ("-", "none", "-"),
    ("o_proj", "zero", "13-19"),
    ("mlp", "zero", "13-19"),
    ("q_proj,k_proj", "reinit", "13-19"),
    ("-", "remove", "13-19"),
    ("v_proj", "zero", "0-1"),
    ("mlp", "reinit", "28-29"),
    ("k_proj", "zero", "0-29"),
    ("-", "remove", "26-29"),
)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", required=True, help="JSONL to write (prompt, response, answer, cell)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)
    import contextlib

    import torch

    from sfn_merge_plugin.smollm2 import smollm2_path
    from sfn_merge_plugin.sweep.apply import Destruction, destroyed_model, model_layout
    from sfn_merge_plugin.sweep.generate import Decoding, generate, render
    from sfn_merge_plugin.sweep.runner import load

    torch.set_num_threads(args.threads)
    model, tok = load(str(smollm2_path()))
    layout = model_layout(model)
    ids = [render(tok, text, True) for text, _ in PROMPTS]
    seen, rows = set(), []
    for modules, method, layers in CELLS:
        d = None if method == "none" else Destruction(modules, method, layers)
        with (contextlib.nullcontext() if d is None else destroyed_model(model, d, layout)):
            outs = generate(model, tok, ids, Decoding(max_new_tokens=40, batch_size=len(ids)))
        for (text, answer), (_, response) in zip(PROMPTS, outs):
            if (text, response) in seen:
                continue
            seen.add((text, response))
            rows.append({"prompt": text, "response": response, "answer": answer, "cell": "intact" if d is None else d.label})
        print(d.label if d else "intact", file=sys.stderr)
    with open(args.output, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    print(f"{len(rows)} responses -> {args.output}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
