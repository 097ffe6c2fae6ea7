"""The report's text as blocks (``lab.render`` turns them into Markdown and HTML). Every number in a
sentence is formatted from results.json or from the constants the lab runs with (``lab.config``,
``lab.verdict``); nothing measured is typed here."""

from __future__ import annotations

from pathlib import Path

from sfn_merge_plugin.lab import tables as T
from sfn_merge_plugin.lab import verdict as V
from sfn_merge_plugin.lab.config import NEW_CIRCUIT, SMALL_CHANGE, SIZES
from sfn_merge_plugin.lab.tasks import MOD, STEPS


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]


def _pid(entry: dict) -> str:
    p = entry["pairs"]
    return p["name"] if p["seed"] is None else f"{p['name']}-s{p['seed']}"


def _table(table) -> tuple:
    return ("table",) + T.display(table)


def verdict_lines(results: dict) -> list:
    return [V.sentence(name, V.pair_verdict(entries), entries) for name, entries in V.groups(results).items()]


def _intro(results: dict) -> list:
    s, t = results["settings"], results["timing"]
    if s.get("base"):
        what = "the user's base model and its reasoning fine-tune"
    else:
        names = sorted(V.groups(results))
        what = (f"{len(names)} base/reasoning pair(s) the lab built itself ({', '.join(names)}; "
                f"{len(s['seeds'])} seed(s): {', '.join(map(str, s['seeds']))})")
    B = [("h", 1, "SfN lab report"),
         ("p", f"The four stethoscopes of \"Who Reasons in the Large Language Models?\" (Delta, Merge, Freeze, "
               f"Destruction) on {what}; size `{s['size']}`, {s['heldout_problems']} held-out problems, device "
               f"{s['device']} ({s['machine']}, {s['torch_threads']} torch threads); whole run "
               f"{t.get('total', 0) / 60:.1f} min. Every number below is in `results.json`; every table is also a "
               "CSV (numbers only: a mean and its standard error are two columns).")]
    if s.get("base"):
        B.append(("p", f"**Your models are scored on the lab's synthetic task, not on a benchmark of yours**: every "
                       f"accuracy below is on {s['heldout_problems']} {STEPS}-step chain problems mod {MOD} "
                       "(`compute 1+3+4*4*2+4+4*5+6 mod 7, left to right.`), asked in each model's own chat "
                       "template and graded on the last `\\boxed{}`. A model that never learnt this task scores "
                       "near chance (about 1/7) whatever it can do elsewhere; to measure your own benchmark, run "
                       "`sfn eval` / `lm_eval --model sfn-hf` on the merged models (`--keep-models`)."))
    if s["size"] == "smoke":
        B.append(("p", "**Smoke size**: every stage ran for a few steps on a few problems to check the plumbing. "
                       "The pairs are not trained, so none of the numbers below means anything."))
    return B


def _verdict(results: dict) -> list:
    groups = V.groups(results)
    items = []
    for name, entries in groups.items():
        v = V.pair_verdict(entries)
        text = f"**{name}: {V.ANSWER_TEXT[v['answer']]}.** {V.details(v)} ({_sentence_case(V.stages_note(entries))}.)"
        if len(entries) > 1:
            text += " Per seed: " + ", ".join(f"seed {e['pairs']['seed']}: {V.pair_verdict([e])['answer']}"
                                              for e in entries) + "."
        items.append(text)
    return [("h", 2, "Verdict"), ("ul", items), ("p", "Rules: " + V.RULES)]


def _pairs(results: dict, figures: dict) -> list:
    s = results["settings"]
    B = [("h", 2, "1. The pairs")]
    if not s.get("base"):
        names = set(V.groups(results))
        entries = list(results["pairs"].values())
        text = ""
        if any(e["pairs"].get("task", "chain") == "chain" for e in entries):
            text = (f"Task: an {STEPS}-step chain mod {MOD} worked left to right (`compute 1+3+4*4*2+4+4*5+6 mod 7, "
                    "left to right.`); the reasoning answer writes the running values inside `<think>...</think>`, "
                    f"then `\\boxed{{}}`. Chance is about 1/{MOD}. ")
        for e in entries:
            if e["pairs"].get("task", "chain") != "chain":
                text += (f"Task of *{e['pairs']['name']}*: {e['pairs']['task_description']}; the reasoning answer "
                         "writes the worked steps inside `<think>...</think>`, then `\\boxed{}`. ")
                break
        if {"new_circuit", "skill"} & names:
            text += ("*new_circuit*: the base was pretrained on chat and direct answers only; its reasoning model is "
                     "a long high-lr SFT on traces that builds the computation (the negative control). *skill*: the "
                     "base also pretrained on plain-text worked traces, so it can compute; a short low-lr SFT "
                     "teaches it to reason in chat (the paper's regime). ")
        for e in results["pairs"].values():
            if e["pairs"]["name"] not in ("new_circuit", "skill"):
                text += f"*{e['pairs']['name']}*: {e['pairs']['description']}. "
                break
        text += ("Accuracy is greedy, in chat format, ± the binomial standard error over problems (over seeds when "
                 "several). `plain text` asks in the base's pretraining format; `<think> forced` writes `<think>` for "
                 "the model first. Chat probes: templated exchanges answered exactly.")
        B.append(("p", text))
    B.append(_table(T.pairs_table(results)))
    checks = T.loss_checks_table(results)
    if checks.rows:
        B.append(("p", "Loss checks: the mean training loss of the last 20 steps of each example kind, against the "
                       "stage's threshold."))
        B.append(_table(checks))
    if figures.get("training"):
        B.append(("img", figures["training"], "Training loss of every stage (dotted: the loss-check thresholds)."))
    for pid, e in results["pairs"].items():
        tr = e["pairs"].get("training") or {}
        if tr and not tr["trusted"]:
            B.append(("p", f"**{pid} failed its loss check**: its verdict is inconclusive. Train longer or use "
                           "another seed (`--seeds`)."))
    return B


def _delta(results: dict, figures: dict) -> list:
    B = [("h", 2, "2. Delta Stethoscope")]
    if not any("delta" in e for e in results["pairs"].values()):
        return B + [("p", "Not run (see `--stages`).")]
    B.append(("p", "Relative change ||W_reasoning - W_base|| / ||W_base|| per module kind (all layers), from "
                   f"`sfn delta`. Regime: *small change* when every linear kind moved <= {SMALL_CHANGE:g}, *new "
                   f"circuit* when the median linear kind moved >= {NEW_CIRCUIT:g}, else *intermediate*."))
    B.append(_table(T.regime_summary(results)))
    B.append(("p", "Relative change of each module kind (rows) in each pair (columns):"))
    B.append(_table(T.per_kind_table(results)))
    if figures.get("regime"):
        B.append(("img", figures["regime"], "Relative change per module kind."))
    claims = T.claims_table(results)
    if claims is not None:
        B.append(("p", "The paper's Delta claims, as measured on every pair (mean over layers of the linear modules; "
                       "the ratio is the largest kind's value over the runner-up's, `inf` when nothing else moved):"))
        B.append(_table(claims))
    for name, entries in V.groups(results).items():
        first = entries[0]
        pid = _pid(first)
        for key in (f"delta_norms_{pid}", f"delta_hist_{pid}"):
            if figures.get(key):
                what = "per-layer change of each linear module" if "norms" in key else "histogram of r"
                B.append(("img", figures[key], f"{pid}: {what} (every seed's figures are in `delta/`)."))
    return B


def _merge(results: dict, figures: dict) -> list:
    B = [("h", 2, "3. Merge Stethoscope (Table 1)")]
    shown = False
    for name in V.groups(results):
        table = T.merge_table(results, name)
        if table:
            shown = True
            B += [("h", 3, name), _table(table)]
    if not shown:
        return B + [("p", "Not run (see `--stages`).")]
    B.append(("p", "Each row replaces one module kind in every layer of the base by the reasoning model's "
                   "(swapped in memory by SfN's intervention engine: the base loaded once, each row applied and "
                   "restored bit for bit, the same tensors `mergekit-yaml` with `sfn_swap` writes; the "
                   "recipes are in `merge/`, run them with `mergekit-yaml` for the merged models). "
                   "Greedy decoding, no budget forcing: each model decides whether to think. "
                   "Tokens are generated tokens (the paper also counted the prompt). `<think> forced` writes "
                   "`<think>` for the model first: it separates carrying the computation in chat from deciding "
                   "to reason."))
    if figures.get("merge"):
        B.append(("img", figures["merge"], "Table 1 as bars (± stderr)."))
    return B + _maps(results)


def _maps(results: dict) -> list:
    """Each pair's localization map (first seed): the heatmaps and the map's own summary sentences."""
    B = []
    for entries in V.groups(results).values():
        m = entries[0].get("merge", {}).get("localize")
        if not m:
            continue
        pid = _pid(entries[0])
        B += [("h", 3, f"{pid}: localization map"),
              ("p", f"Table 1 cell by cell (`sfn localize`, in memory): sufficiency = the base with one module kind "
                    f"of {m['window']} layer(s) taken from the reasoning model, necessity = the reasoning model with "
                    f"them reverted to the base; share = the part of the gap each cell recovers or destroys, with "
                    f"95% bootstrap intervals over {m['problems']} held-out problems ({m['max_new_tokens']} tokens). "
                    "Every cell's numbers are in `merge/<pair>/localize/map.csv`."),
              ("ul", [line.strip() for line in m["summary_lines"]])]
        B += [("img", path, f"{pid}: {Path(path).stem} share of the gap per module kind and layer window.")
              for path in m["figures"]]
        packs = entries[0]["merge"].get("packs")
        if packs:
            rows = [[r["pack"] if r["rank"] is None else f"LoRA r{r['rank']}", f"{r['size_bytes'] / 1024:.1f}",
                     f"{r['kept_energy']:.3f}", f"{r['accuracy']:.3f}"] for r in packs["rows"]]
            B += [("p", f"{pid}: base + the reasoning model's {packs['modules']} as a pack (`sfn pack`, hot-swapped on "
                        "one loaded base): exact, then PEFT LoRA of each rank (kept energy = share of the delta's "
                        "squared Frobenius norm). The exact row is Table 1's o_proj row "
                        f"({'same accuracy' if packs['exact_equals_table1'] else 'DIFFERENT accuracy'})."),
                  ("table", ["pack", "adapter KiB", "kept energy", "accuracy"], rows)]
    return B


def _freeze(results: dict, figures: dict) -> list:
    s = results["settings"]
    groups = V.groups(results)
    B = [("h", 2, "4. Freeze Stethoscope (Table 2, Fig. 6)")]
    shown, skipped = False, []
    for name in groups:
        table = T.freeze_table(results, name)
        if not table:
            skipped.append(name)
            continue
        shown = True
        budget = groups[name][0]["freeze"]["budget"]
        over = "over the pair's seeds (each the mean of its runs)" if len(groups[name]) > 1 else "over the runs"
        B += [("h", 3, name),
              ("p", f"From the base, {budget['steps']} steps of batch {budget['batch']} at lr {budget['lr']:g} on the "
                    f"pair's reasoning-SFT data, {s['freeze_seeds']} training seed(s) per row; mean ± stderr {over}."),
              _table(table)]
        if figures.get(f"freeze_{name}"):
            B.append(("img", figures[f"freeze_{name}"], f"{name}: training loss of every Freeze run."))
    if shown and skipped:
        default = ",".join(SIZES["full"].freeze_pairs)
        circuit = SIZES["full"].freeze.get("new_circuit")
        B.append(("p", f"Not run on {', '.join(skipped)} (`--freeze-pairs {','.join(s['freeze_pairs'])}`; default: "
                       f"{default}). " + (f"new_circuit's reasoning fine-tune is {circuit.steps} steps, so its "
                                           "4 rows x seeds take far longer than the rest of the lab; " if circuit and
                                           "new_circuit" in skipped else "")
                       + f"add it with `--freeze-pairs {','.join(groups)} --freeze-seeds 1`."))
    if not shown:
        return B + [("p", "Not run (see `--stages`).")]
    B.append(("p", "Each run is a shipped TRL recipe (`trl_configs/freeze_*.yaml`, `full.yaml`) scaled down: "
                   "model, data, steps, batch, learning rate and precision are overridden, everything else "
                   "(scheduler, warm-up, weight decay, betas, completion-only loss) is the recipe's. TRL's "
                   "SFTTrainer trains it with `model_init_kwargs: {sfn_trainable: ...}` (SfN's FreezeCallback); "
                   "`frozen tensors moved` counts frozen tensors that changed (0 expected). Each run is a fresh "
                   "process: peak memory is its CUDA allocator peak, or on a CPU its resident-set growth sampled "
                   "every 20 ms (dominated by activations and allocator slack at this size). Training state = fp32 "
                   "weights + gradient and Adam moments of the trainable parameters."))
    return B


def _destruction(results: dict) -> list:
    from sfn_merge_plugin.lab.stages import format_layers

    groups = V.groups(results)
    B = [("h", 2, "5. Destruction Stethoscope (Table 3)")]
    shown = [entries[0] for entries in groups.values()]
    any_destroy = False
    for e in shown:
        pid = _pid(e)
        table = T.destruction_table(results, pid)
        if not table:
            continue
        any_destroy = True
        d = e["destruction"]
        chosen = d.get("layers_selected")
        layers = d["layers"] + (f" (= layers {format_layers(chosen)})" if chosen and format_layers(chosen) != d["layers"]
                                else "")
        B += [("h", 3, f"{pid}: reasoning model, layers {layers}"), _table(table)]
        compared = [(r["conversation_level"], T.PAPER_TABLE3[(r["module"], r["method"])]) for r in d["table"]
                    if (r["module"], r["method"]) in T.PAPER_TABLE3]
        same = sum(1 for ours, paper in compared if ours == paper)
        notes = [f"conversation level equal to the paper's Table 3 in {same} of {len(compared)} cells"]
        notes += [f"cells with identical logits: {' == '.join(c['cells'])} ({c['reason']})" for c in d["classes"]]
        notes += list(d["caveats"])
        if not d["calibration_reliable"]:
            notes.append("the level calibration was flagged unreliable for this model (see the sweep's sweep.json)")
        B.append(("ul", notes))
    if not any_destroy:
        return B + [("p", "Not run (see `--stages`).")]
    if len(shown) < len(results["pairs"]):
        B.append(("p", "The first seed of each pair is shown; every seed's table is in `table3_destruction.csv` and "
                       "`destruction/<pair>/`."))
    B.append(("p", "Levels (`sfn destroy-sweep`): I random tokens, II fluent but off-context, III in context but "
                   "wrong, IV correct; conversation level = the most frequent level on the chat prompts, reasoning "
                   "correct = graded answers. Every response, its level and the evidence numbers are in "
                   "`destruction/<pair>/responses.jsonl`. The paper graded one conversation by hand."))
    return B


def _reproduce(results: dict) -> list:
    s, t = results["settings"], results["timing"]
    cmd = s.get("command") or "sfn lab -o OUT"
    env = s.get("environment") or {}
    versions = ", ".join(f"{k} {env[k]}" for k in ("transformers", "tokenizers", "trl", "mergekit") if env.get(k))
    return [("h", 2, "Reproduce"), ("code", cmd),
            ("table", ["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in t.items()]),
            ("p", f"SfN {s['sfn_version']}, torch {s['torch_version']}, Python {s['python']}"
                  + (f", {versions}" if versions else "")
                  + (f"; CPU {env.get('cpu')} (torch kernels: {env.get('cpu_capability')})" if env.get("cpu") else "")
                  + f". Trained pairs are cached in `{s.get('cache_dir', '?')}` (keyed by recipe, seed, code version "
                  "and compute platform): a second run skips training. A run repeats bit for bit on the same machine "
                  "with the same versions and thread count; another CPU kernel path (e.g. AVX-512 instead of AVX2) "
                  "or another torch changes the low bits, and a training run that passes through a sudden circuit "
                  "formation can then end elsewhere (see docs/lab.md).")]


def build(results: dict, root: Path, figures: dict) -> list:
    """The whole report as blocks."""
    return (_intro(results) + _verdict(results) + _pairs(results, figures) + _delta(results, figures)
            + _merge(results, figures) + _freeze(results, figures) + _destruction(results) + _reproduce(results))
