"""``run_map``: every cell of a localization map, measured in one loaded model at a time.

Sufficiency runs on the loaded base with the cell's tensors streamed from the tune's checkpoint;
necessity on the loaded tune with the cell's tensors streamed back from the base. Each phase loads its
model once; a cell moves only its own tensors (``intervention.swap_edit``), generates on every problem
in batches (``hf_backend.generate_ids``: the stack evaluation uses), grades with ``grading.grade``, keeps
a few chat responses for the level grader, and is undone; after every cell the probe logits must equal
the undamaged model's bit for bit. Levels are graded at the end of a phase with the undamaged model.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from sfn_merge_plugin.localize.plan import DIRECTIONS, Cell, MapConfig, plan_cells


@dataclass
class CellResult:
    cell: Cell
    correct: np.ndarray  # [problems, samples] 1 = graded correct
    examples: list  # (prompt, response) of the first problems
    chat: list = field(default_factory=list)  # (prompt, token ids, text) of the conversation check
    levels: list = field(default_factory=list)  # level of each chat response
    level: str | None = None  # modal level of the conversation check
    seconds: float = 0.0
    digest: str = ""  # sha256 of every generated token id: equal digests = the same responses, token for token
    accuracy: object = None  # stats.Estimate
    share: object = None  # stats.Estimate


@dataclass
class MapResult:
    config: MapConfig
    architecture: str
    num_layers: int
    cells: dict  # direction -> [CellResult]
    base: object  # stats.Estimate: the base's accuracy (sufficiency "none" cell)
    tuned: object  # stats.Estimate: the tune's accuracy (necessity "none" cell)
    gap: object  # stats.Estimate: tuned - base
    checks: list  # plain sentences: restoration and consistency checks that passed
    consistency: dict  # name -> bool (only with config.consistency)
    timing: dict  # cells, seconds, cells_per_minute, peak_rss_bytes, model_bytes

    def rows(self) -> list:
        """The measured cells (the ends excluded), in plan order."""
        return [r for d in self.config.directions for r in self.cells.get(d, []) if r.cell.row not in ("none", "all")]


def _peak_rss() -> int:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kb if sys.platform == "darwin" else kb * 1024)


def _sampling(config: MapConfig):
    if config.samples == 1:
        return None
    return {"do_sample": True, "temperature": config.temperature, "top_p": config.top_p, "seed": config.seed}


def measure_cell(model, tokenizer, prompt_ids, problems, chat_ids, chat_texts, config: MapConfig) -> tuple:
    """(correct [problems, samples], examples, chat responses, digest of all token ids) of the model as it is now."""
    import hashlib

    from sfn_merge_plugin.evaluation.hf_backend import generate_ids
    from sfn_merge_plugin.grading import grade

    k = config.samples
    repeated = [p for p in prompt_ids for _ in range(k)]  # problem-major: rows i*k .. i*k+k-1
    outs = generate_ids(model, tokenizer, repeated, config.max_new_tokens, sampling=_sampling(config),
                        batch_size=config.batch_size)
    texts = [tokenizer.decode(o.token_ids, skip_special_tokens=True) for o in outs]
    correct = np.array([bool(grade(t, problems[i // k].answer, problems[i // k].kind)) for i, t in enumerate(texts)],
                       dtype=np.float64).reshape(len(problems), k)
    examples = [(problems[i].prompt, texts[i * k]) for i in range(min(2, len(problems)))]
    chat = []
    if chat_ids:
        chat_outs = generate_ids(model, tokenizer, chat_ids, config.chat_tokens, batch_size=config.batch_size)
        chat = [(p, list(o.token_ids), tokenizer.decode(o.token_ids, skip_special_tokens=True))
                for p, o in zip(chat_texts, chat_outs)]
    digest = hashlib.sha256(repr([o.token_ids for o in outs] + [c[1] for c in chat]).encode()).hexdigest()
    return correct, examples, chat, digest


def _grade_levels(model, tokenizer, chat_template: bool, results: list, config: MapConfig, notes: list) -> None:
    """Conversation levels (the destruction sweep's grader) of every cell's chat responses, scored by the
    undamaged model of this phase."""
    from sfn_merge_plugin.sweep import levels
    from sfn_merge_plugin.sweep.scoring import HFScorer

    items = [(p, ids, text) for r in results for p, ids, text in r.chat]
    if not items:
        return
    scorer = HFScorer(model, tokenizer, chat_template, batch_size=max(1, config.batch_size // 2))
    cal = levels.calibrate(scorer, levels.CALIBRATION, config.seed)
    notes += [f"level calibration: {p}" for p in cal.problems()]
    evidence = iter(levels.measure(scorer, items, config.seed))
    for r in results:
        r.levels = [levels.classify(next(evidence), cal)[0] for _ in r.chat]
        r.level = levels.modal_level(r.levels)


def _phase(direction: str, loaded: str, donor_path: str, cells: list, problems: list, config: MapConfig, bar,
           notes: list, on_first=None) -> list:
    from sfn_merge_plugin.intervention import Donor, Edit, intervene, logit_fingerprint, model_layout, swap_edit
    from sfn_merge_plugin.sweep.generate import chat_enabled, render
    from sfn_merge_plugin.sweep.prompts import BUILTIN
    from sfn_merge_plugin.sweep.runner import load

    model, tokenizer = load(loaded, config.dtype, config.device)
    layout = model_layout(model)
    donor = Donor(donor_path)
    donor.check_matches(layout)
    chat = chat_enabled(tokenizer, None)
    prompt_ids = [render(tokenizer, p.prompt, chat) for p in problems]
    chat_prompts = [p.text for p in BUILTIN if p.kind == "conversation"][: config.chat_prompts]
    chat_ids = [render(tokenizer, t, chat) for t in chat_prompts]
    probe = [prompt_ids[0][:64]]
    reference = logit_fingerprint(model, probe)
    results = []
    try:
        for cell in cells:
            bar.set_postfix_str(cell.label)
            t0 = time.perf_counter()
            edit = Edit() if cell.row == "none" else swap_edit(model, layout, cell.selected, donor, cell.label)
            with intervene(model, edit, layout):
                del edit
                correct, examples, responses, digest = measure_cell(model, tokenizer, prompt_ids, problems, chat_ids,
                                                            chat_prompts, config)
            if logit_fingerprint(model, probe) != reference:
                raise RuntimeError(f"{cell.label}: the model was not restored exactly (probe logits differ); please report this")
            results.append(CellResult(cell, correct, examples, responses, seconds=time.perf_counter() - t0, digest=digest))
            bar.update(1)
            if on_first is not None and len(results) == 1:
                on_first(results[0].seconds)
        notes.append(f"{direction}: after each of {len(cells)} cells the restored {loaded} reproduced its probe logits bit for bit")
        _grade_levels(model, tokenizer, chat, results, config, notes)
    finally:
        donor.close()
        del model
        import gc

        gc.collect()  # the next phase loads the other model: never two in memory
    return results


def estimate_line(n_cells: int, config: MapConfig, n_problems: int, per_cell_s: float | None = None) -> str:
    """The run's size before it starts (cells x problems x samples x tokens), and its time once one cell ran."""
    tokens = n_cells * (n_problems * config.samples * config.max_new_tokens + config.chat_prompts * config.chat_tokens)
    line = (f"sfn localize: {n_cells} cells x {n_problems} problems x {config.samples} sample(s) x "
            f"{config.max_new_tokens} tokens (+ {config.chat_prompts} chat prompts x {config.chat_tokens}): "
            f"at most {tokens:,} generated tokens")
    if per_cell_s is not None:
        line += f"; estimated run time ~{n_cells * per_cell_s / 60:.1f} min ({per_cell_s:.1f} s for the first cell)"
    return line


def run_map(config: MapConfig) -> MapResult:
    """Measure every cell of ``config`` and, with ``config.out``, write map.csv, map.json, the heatmaps and
    summary.md. Everything is validated (selectors, donor tensors, task data, output folder) before a model loads."""
    from tqdm.auto import tqdm

    from sfn_merge_plugin.checkpoint import layout_of, open_checkpoint
    from sfn_merge_plugin.intervention import Donor, file_size
    from sfn_merge_plugin.localize import stats
    from sfn_merge_plugin.localize.tasks import load_problems

    config.check()
    base_ckpt = open_checkpoint(config.base)
    layout = layout_of(base_ckpt)
    Donor(config.tuned).check_matches(layout)
    plan = plan_cells(layout, config)
    problems = load_problems(config.task, config.problems, config.seed)
    if config.out is not None:
        from sfn_merge_plugin.outputs import check_output_folder

        check_output_folder(config.out, force=config.force)
    # both ends are needed for the shares: a direction not asked for still measures its "none" cell
    phases = {d: plan[d] if d in config.directions else [c for c in plan_cells(layout, _with(config, d))[d][:1]]
              for d in DIRECTIONS}
    n_cells = sum(len(c) for c in phases.values())
    print(estimate_line(n_cells, config, len(problems)), file=sys.stderr)
    notes: list = []
    t_start = time.perf_counter()
    cells = {}
    with tqdm(total=n_cells, desc="localize", unit="cell", disable=not config.progress) as bar:
        first = (lambda s: print(estimate_line(n_cells, config, len(problems), s), file=sys.stderr))
        cells["sufficiency"] = _phase("sufficiency", config.base, config.tuned, phases["sufficiency"], problems,
                                      config, bar, notes, on_first=first)
        cells["necessity"] = _phase("necessity", config.tuned, config.base, phases["necessity"], problems, config, bar, notes)
    seconds = time.perf_counter() - t_start

    indices = stats.resample_indices(len(problems), config.samples, config.bootstrap, config.seed)
    base_c, tuned_c = cells["sufficiency"][0].correct, cells["necessity"][0].correct
    for direction, results in cells.items():
        for r in results:
            r.accuracy = stats.accuracy(r.correct, indices)
            r.share = stats.share(direction, r.correct, base_c, tuned_c, indices)
    consistency = {}
    if config.consistency:
        ends = {d: {r.cell.row: r for r in cells[d]} for d in DIRECTIONS}
        other = {"sufficiency": ("necessity", "tuned"), "necessity": ("sufficiency", "base")}
        for d in config.directions:
            ref = ends[other[d][0]]["none"]
            mine = ends[d]["all"]
            consistency[f"{d}(all) == {other[d][1]}"] = bool(mine.digest == ref.digest and np.array_equal(mine.correct, ref.correct))
        for name, ok in consistency.items():
            notes.append(f"consistency {name}: {'holds' if ok else 'FAILS'} (the same responses, token for token)")
    result = MapResult(
        config, layout.architecture, layout.num_layers, {d: cells[d] for d in DIRECTIONS},
        stats.accuracy(base_c, indices), stats.accuracy(tuned_c, indices), stats.gap(base_c, tuned_c, indices),
        notes, consistency,
        {"cells": n_cells, "seconds": seconds, "cells_per_minute": n_cells / seconds * 60 if seconds else math.nan,
         "peak_rss_bytes": _peak_rss(), "model_bytes": file_size(base_ckpt.path)},
    )
    if config.out is not None:
        from sfn_merge_plugin.localize.report import write_report

        write_report(result, config.out)
    return result


def _with(config: MapConfig, direction: str) -> MapConfig:
    from dataclasses import replace

    return replace(config, directions=(direction,), consistency=False)


def merge_table_in_memory(base: str, tuned: str, rows, evaluate, *, device=None, dtype: str = "auto",
                          progress: bool = True) -> dict:
    """Table 1 without writing merged models: load ``base`` once, and for each ``(label, modules)`` of ``rows``
    swap those modules of every layer in from ``tuned`` (streamed from its checkpoint; the same bytes as
    mergekit + sfn_swap), call ``evaluate(model, tokenizer)``, and restore. Returns {label: what evaluate
    returned}; also checks the restored base reproduces its probe logits after every row."""
    from tqdm.auto import tqdm

    from sfn_merge_plugin.intervention import Donor, logit_fingerprint, model_layout, swapped
    from sfn_merge_plugin.sweep.runner import load

    model, tokenizer = load(base, dtype, device)
    layout = model_layout(model)
    donor = Donor(tuned)
    donor.check_matches(layout)
    probe = [tokenizer("compute 1+2 mod 7, left to right.", add_special_tokens=True)["input_ids"] or [0]]
    reference = logit_fingerprint(model, probe)
    out = {}
    try:
        for label, modules in tqdm(list(rows), desc="merge rows", unit="row", disable=not progress):
            with swapped(model, donor, modules, "all", layout):
                out[label] = evaluate(model, tokenizer)
            if logit_fingerprint(model, probe) != reference:
                raise RuntimeError(f"merge row {label}: the base was not restored exactly; please report this")
    finally:
        donor.close()
    return out
