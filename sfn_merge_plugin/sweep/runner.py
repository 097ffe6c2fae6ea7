"""``run_sweep``: destroy one module kind at a time in one loaded model, generate, grade every response.

Order of work: validate everything from the checkpoint's headers (selectors, layer ranges, prompts,
output folder), load the model once, run the undamaged model and each cell (destroy in memory ->
generate -> logit fingerprint of the probes -> restore), check the restored model reproduces the
undamaged fingerprint, then classify every response: one the text rules decide (empty, a loop, non-words,
graded correct: ``levels.text_decision``) as it stands, every other after scoring it with the undamaged model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from sfn_merge_plugin.sweep.apply import METHODS, Destruction

INTACT = "intact"
TEXT_DECIDED = "decided by the text alone: not scored by the model (nll fields are null)"


@dataclass
class Response:
    prompt_id: str
    prompt_kind: str
    prompt: str
    response: str
    token_ids: list
    level: Optional[str] = None
    reasons: list = field(default_factory=list)
    evidence: dict = field(default_factory=dict)


@dataclass
class Cell:
    label: str
    destruction: Optional[Destruction]  # None: the undamaged model
    row: str = ""  # the sweep row as the user wrote it ("q_proj+k_proj")
    responses: list = field(default_factory=list)
    fingerprint: str = ""
    equivalent_to: list = field(default_factory=list)  # labels of the other cells with identical probe logits

    @property
    def module(self) -> str:
        if self.destruction is None:
            return INTACT
        return "-" if self.destruction.method == "remove" else (self.row or self.destruction.modules)

    @property
    def method(self) -> str:
        return "-" if self.destruction is None else self.destruction.method

    @property
    def layers(self) -> str:
        return "-" if self.destruction is None else self.destruction.layers

    def counts(self, kind: Optional[str] = None) -> dict:
        levels = [r.level for r in self.responses if kind is None or r.prompt_kind == kind]
        return {lv: levels.count(lv) for lv in ("I", "II", "III", "IV")}

    def modal(self, kind: Optional[str] = None) -> Optional[str]:
        from sfn_merge_plugin.sweep.levels import modal_level

        return modal_level([r.level for r in self.responses if kind is None or r.prompt_kind == kind])

    def correct(self) -> tuple:
        graded = [r for r in self.responses if r.evidence.get("correct") is not None]
        return sum(bool(r.evidence["correct"]) for r in graded), len(graded)


@dataclass
class SweepResult:
    cells: list
    calibration: object  # levels.Calibration
    classes: list  # [([labels], reason)]
    caveats: list
    notes: list
    settings: dict
    per_layer: bool = False

    def cell(self, label: str) -> Cell:
        return next(c for c in self.cells if c.label == label)


def split_rows(modules) -> list:
    """Sweep rows from ``"q_proj,k_proj,mlp"`` (one row per item; ``q_proj+k_proj`` is one row of two kinds)
    or a list of selectors. A ``re:`` selector must be the whole string (or one list item)."""
    from sfn_merge_plugin.selectors import SelectorError, parse_modules

    if isinstance(modules, str):
        text = modules.strip()
        rows = [text] if text.startswith("re:") else [r.strip() for r in text.split(",")]
    elif isinstance(modules, (list, tuple)):
        rows = [str(r).strip() for r in modules]
    else:
        raise SelectorError(f"modules {modules!r}: expected a string such as \"q_proj,k_proj,mlp\" or a list of selectors")
    if not rows or any(not r for r in rows):
        raise SelectorError(f"modules {modules!r}: an empty row; write e.g. \"q_proj,k_proj,v_proj,o_proj\"")
    out = []
    for r in rows:
        spec = r if r.startswith("re:") else r.replace("+", ",")
        parse_modules(spec)
        if r in out:
            raise SelectorError(f"modules: row {r!r} is listed twice")
        out.append(r)
    return out


def split_methods(methods) -> list:
    from sfn_merge_plugin.selectors import SelectorError

    items = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods)
    bad = [m for m in items if m not in METHODS]
    if bad or not items:
        raise SelectorError(f"methods {methods!r}: {', '.join(map(repr, bad)) or 'none given'}; choose from {', '.join(METHODS)}")
    return list(dict.fromkeys(items))


def plan_cells(layout, rows: list, methods: list, layers: str, per_layer: bool, seed=0, mean=0.0, std=0.02) -> list:
    """Every Destruction of the sweep, each resolved against ``layout`` (raises on any selector problem)."""
    from sfn_merge_plugin.selectors import SelectorError, parse_layers
    from sfn_merge_plugin.sweep.apply import resolve

    layer_specs = [str(i) for i in parse_layers(layers).resolve(layout.num_layers)] if per_layer else [layers]
    cells = []
    for spec in layer_specs:
        for method in methods:
            if method == "remove":
                cells.append(Destruction("-", "remove", spec, seed, mean, std))
                continue
            for row in rows:
                selector = row if row.startswith("re:") else row.replace("+", ",")
                cells.append(Destruction(selector, method, spec, seed, mean, std))
    for d in cells:
        selected = resolve(layout, d)
        if per_layer and d.method != "remove":
            model_level = sorted({s.name for s in selected if s.layer is None})
            if model_level:
                raise SelectorError(
                    f"--per-layer: row {d.modules!r} selects model-level tensors ({', '.join(model_level)}) that belong "
                    "to no layer, so every per-layer cell would destroy them; sweep them in a run without --per-layer"
                )
    return cells


def _label(d: Destruction, row_names: dict) -> str:
    if d.method == "remove":
        return f"remove@{d.layers}"
    return f"{d.method}({row_names.get(d.modules, d.modules)})@{d.layers}"


def run_sweep(model_path_or_model, modules, methods=("zero", "reinit", "remove"), layers="all", out_dir=None,
              prompts=None, per_layer=False, *, tokenizer=None, decoding=None, seed=0, mean=0.0, std=0.02,
              probes=4, dtype="auto", device=None, progress=True, calibration=None) -> SweepResult:
    """Run the destruction sweep (the paper's Table 3, automated) and, with ``out_dir``, write its report.

    ``modules``: rows, ``"q_proj,k_proj,mlp"`` or a list; ``methods``: zero/reinit/remove; ``layers``: the
    selector language (``"5-30"``, ``"0.2-0.5"``); ``prompts``: None (built-in), a JSONL path (replaces them)
    or a list of ``prompts.Prompt``; ``per_layer``: one layer at a time (heatmap); ``decoding``:
    ``generate.Decoding``; ``seed``/``mean``/``std``: the ReInit draw, as in ``sfn_destroy``."""
    from sfn_merge_plugin.sweep import prompts as prompt_mod
    from sfn_merge_plugin.sweep.generate import Decoding

    decoding = decoding or Decoding()
    rows = split_rows(modules)
    method_list = split_methods(methods)
    if isinstance(prompts, (str, os.PathLike)):
        prompt_list = prompt_mod.prompt_set(str(prompts))
    else:
        prompt_list = prompt_mod.check_unique(list(prompts) if prompts is not None else list(prompt_mod.BUILTIN))
    if out_dir is not None and os.path.exists(out_dir) and not os.path.isdir(out_dir):
        from sfn_merge_plugin.errors import UserError

        raise UserError(f"output {out_dir} exists and is a file; give a folder path")
    _check_decoding(decoding, probes)
    _check_answers(prompt_list)

    if isinstance(model_path_or_model, (str, os.PathLike)):
        from sfn_merge_plugin.checkpoint import layout_of, open_checkpoint

        ckpt = open_checkpoint(str(model_path_or_model))
        plan_cells(layout_of(ckpt), rows, method_list, layers, per_layer, seed, mean, std)  # fail before loading
        model, tokenizer = load(ckpt.path, dtype, device)
        source = ckpt.path
    else:
        model, source = model_path_or_model, getattr(model_path_or_model, "name_or_path", type(model_path_or_model).__name__)
        if tokenizer is None:
            from sfn_merge_plugin.errors import UserError

            raise UserError("run_sweep with a loaded model needs its tokenizer= as well")
    result = _sweep(model, tokenizer, rows, method_list, layers, per_layer, prompt_list, decoding,
                    seed, mean, std, probes, progress, calibration)
    result.settings.update(model=str(source), modules=rows, methods=method_list, layers=layers, per_layer=per_layer,
                           seed=seed, mean=mean, std=std)
    if out_dir is not None:
        from sfn_merge_plugin.sweep.report import write_report

        write_report(result, out_dir)
    return result


def _check_decoding(decoding, probes):
    from sfn_merge_plugin.errors import UserError

    if decoding.max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be >= 1, got {decoding.max_new_tokens}")
    if decoding.batch_size < 1:
        raise UserError(f"batch size must be >= 1, got {decoding.batch_size}")
    if decoding.sample and not (decoding.temperature > 0 and 0 < decoding.top_p <= 1):
        raise UserError(f"sampling needs temperature > 0 and 0 < top_p <= 1 (got {decoding.temperature}, {decoding.top_p})")
    if probes < 1:
        raise UserError(f"probes must be >= 1 (prompts used to compare logits), got {probes}")


def _check_answers(prompt_list):
    """A gold answer the grader cannot use fails now, not after hours of generation."""
    try:
        from sfn_merge_plugin.grading import GradingError, grade
    except ImportError:
        return
    from sfn_merge_plugin.errors import UserError

    for p in prompt_list:
        if p.answer is not None:
            try:
                grade("\\boxed{0}", p.answer, p.grader)  # an extractable answer, so the gold is checked
            except GradingError as exc:
                raise UserError(f"prompt {p.id!r}: {exc}") from None


def load(path: str, dtype="auto", device=None):
    """Model (eval mode, stored dtype unless told, never remote code) and tokenizer of a local folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    placement = {} if device == "cpu" else {"device_map": device}  # device_map needs accelerate
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, trust_remote_code=False, **placement)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    return model, tokenizer


def _sweep(model, tokenizer, rows, methods, layers, per_layer, prompt_list, decoding, seed, mean, std, probes,
           progress, calibration) -> SweepResult:
    from tqdm.auto import tqdm

    from sfn_merge_plugin.sweep import equivalence, levels
    from sfn_merge_plugin.sweep.apply import destroyed_model, model_layout, resolve, tied_head_note
    from sfn_merge_plugin.sweep.generate import chat_enabled, generate, logit_fingerprint, render
    from sfn_merge_plugin.sweep.scoring import HFScorer

    layout = model_layout(model)
    plan = plan_cells(layout, rows, methods, layers, per_layer, seed, mean, std)
    row_names = {(r if r.startswith("re:") else r.replace("+", ",")): r for r in rows}
    chat = chat_enabled(tokenizer, decoding.chat_template)
    prompt_ids = [render(tokenizer, p.text, chat) for p in prompt_list]
    probe_ids = prompt_ids[:probes]

    def run_cell(cell):
        for p, (tokens, text) in zip(prompt_list, generate(model, tokenizer, prompt_ids, decoding)):
            cell.responses.append(Response(p.id, p.kind, p.text, text, tokens))
        cell.fingerprint = logit_fingerprint(model, probe_ids)

    cells = [Cell(INTACT, None)] + [Cell(_label(d, row_names), d, row_names.get(d.modules, d.modules)) for d in plan]
    bar = tqdm(cells, desc="destroy-sweep", unit="cell", disable=not progress)
    for cell in bar:
        bar.set_postfix_str(cell.label)
        if cell.destruction is None:
            run_cell(cell)
            continue
        with destroyed_model(model, cell.destruction, layout):
            run_cell(cell)
    notes = list(dict.fromkeys(n for d in plan if d.method != "remove"
                               for n in [tied_head_note(layout, resolve(layout, d))] if n))
    if logit_fingerprint(model, probe_ids) != cells[0].fingerprint:
        raise RuntimeError("the model was not restored exactly after the sweep (probe logits differ); please report this")
    notes.append("restoration checked: after all cells the model reproduces the undamaged probe logits bit for bit")

    scorer = HFScorer(model, tokenizer, chat, progress=progress)
    cal = levels.calibrate(scorer, calibration or levels.CALIBRATION, seed)
    notes += [f"calibration: {p}" for p in cal.problems()]
    everything = [r for cell in cells for r in cell.responses]
    grade = _grader(notes)
    gold = {p.id: p for p in prompt_list}
    verdicts = [None if gold[r.prompt_id].answer is None or grade is None
                else bool(grade(r.response, gold[r.prompt_id].answer, gold[r.prompt_id].grader)) for r in everything]
    # units from the text, never the generated ids: the same text gets the same evidence in every cell; a
    # response the text rules already decide (empty, a loop, non-words, graded correct) is not scored
    items = [(r.prompt, scorer.encode(r.response), r.response) for r in everything]
    evidence = levels.measure(scorer, items, seed, correct=verdicts, skip_decided=True)
    for r, ev in zip(everything, evidence):
        r.level, r.reasons = levels.classify(ev, cal)
        if ev.tokens and ev.nll is None:
            r.reasons = r.reasons + [TEXT_DECIDED]
        r.evidence = ev.as_dict()

    classes = []
    for labels in equivalence.group([(c.label, c.fingerprint) for c in cells]):
        members = [next(c.destruction for c in cells if c.label == lbl) for lbl in labels]
        classes.append((labels, equivalence.reason(members, layout)))
        for c in cells:
            if c.label in labels:
                c.equivalent_to = [lbl for lbl in labels if lbl != c.label]
    settings = {"chat_template": chat, "decoding": vars(decoding).copy(), "probes": len(probe_ids),
                "prompts": [p.id for p in prompt_list], "num_layers": layout.num_layers,
                "architecture": layout.architecture}
    return SweepResult(cells, cal, classes, equivalence.attention_caveat(classes), notes, settings, per_layer)


def _grader(notes: list):
    try:
        from sfn_merge_plugin.grading import grade
    except ImportError:
        notes.append("sfn_merge_plugin.grading is not available: no response can reach Level IV")
        return None
    return grade
