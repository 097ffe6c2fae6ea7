"""The lab's numbers in README.md and docs/lab.md, written from a committed results file, never by hand.

    python -m sfn_merge_plugin.lab.docs publish LAB_DIR    # LAB_DIR/results.json -> docs/results/lab_seed0.json
    python -m sfn_merge_plugin.lab.docs publish LAB_DIR smollm2   # an `sfn lab --pair smollm2` run -> lab_smollm2.json
    python -m sfn_merge_plugin.lab.docs write              # fill every marked block from the committed file
    python -m sfn_merge_plugin.lab.docs check              # exit 1 when a block differs (the test suite runs it)

A block is the text between ``<!-- sfn:lab-begin NAME -->`` and ``<!-- sfn:lab-end NAME -->``; ``BLOCKS``
renders each from the results (``LabResults``), which record the command, seed, thread count, versions
and CPU that produced them. ``NAME`` is a block of the offline lab's file (``results``) or, prefixed
with a source of ``SOURCES`` (``smollm2-results``), of that source's file.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from sfn_merge_plugin.errors import DataError
from sfn_merge_plugin.lab import tables as T
from sfn_merge_plugin.lab import verdict as V
from sfn_merge_plugin.lab.results import LabResults

REPO = Path(__file__).resolve().parents[2]
RESULTS_FILE = REPO / "docs" / "results" / "lab_seed0.json"
SOURCES = {"lab": RESULTS_FILE, "smollm2": REPO / "docs" / "results" / "lab_smollm2.json"}  # source -> committed file
DOC_FILES = (REPO / "docs" / "lab.md", REPO / "README.md")
_BLOCK = re.compile(r"(<!-- sfn:lab-begin (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- sfn:lab-end (?P=name) -->)", re.S)
DROP = ("curves", "curve", "examples")  # bulky series the docs never use (the lab folder keeps them)


def publish(lab_dir, dest: Path = RESULTS_FILE) -> Path:
    """A lab folder's results.json, without its loss curves and example responses, as the committed file."""
    from sfn_merge_plugin.outputs import atomic_write_json

    doc = LabResults.read(lab_dir).to_json()
    return atomic_write_json(dest, _drop(doc))


def _source_file(source: str) -> Path:
    if source not in SOURCES:
        raise DataError(f"unknown lab results source {source!r}; known: {', '.join(SOURCES)}")
    return SOURCES[source]


def _drop(obj):
    if isinstance(obj, dict):
        return {k: _drop(v) for k, v in obj.items() if k not in DROP}
    if isinstance(obj, list):
        return [_drop(v) for v in obj]
    return obj


def load(path: Path = RESULTS_FILE) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no committed lab results; run `sfn lab -o LAB` and "
                        "`python -m sfn_merge_plugin.lab.docs publish LAB`") from None
    return LabResults.from_json(doc).to_json()


# --- the blocks ------------------------------------------------------------------------------------

def _pct(x) -> str:
    return "-" if x is None else f"{x:.0%}"


def _acc(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def _provenance(r: dict) -> str:
    s = r["settings"]
    env = s.get("environment") or {}
    return (f"`{s['command']}` on {env.get('cpu', s['machine'])} ({s['machine']}, torch kernels "
            f"{env.get('cpu_capability', '?')}), {s['torch_threads']} torch threads, SfN {s['sfn_version']}, "
            f"torch {s['torch_version']}, transformers {env.get('transformers', '?')}; "
            f"file: `docs/results/{r.get('committed_file', RESULTS_FILE.name)}`")


def block_results(r: dict) -> str:
    """docs/lab.md: what one run measured, per pair."""
    groups = V.groups(r)
    names = list(groups)
    verdicts = {n: V.pair_verdict(es) for n, es in groups.items()}
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def row(title, cells):
        lines.append(f"| {title} | " + " | ".join(cells) + " |")

    row("base → reasoning (chat accuracy)", [f"{_acc(v['base'])} → {_acc(v['reasoning'])}" for v in verdicts.values()])
    row("regime (largest ‖B−A‖/‖A‖ of a linear module)",
        [f"{'/'.join(v['regime'] or ['-'])} ({v['max_rel_delta']:.3f})" if v.get("max_rel_delta") is not None else "-"
         for v in verdicts.values()])
    for label, _ in r["settings"]["swaps"]:
        row(f"base + reasoning's {label} (share of the gap)",
            [f"{_acc(v['swaps'][label])} ({_pct(v['recovered'][label])})" if v.get("swaps") else "not run"
             for v in verdicts.values()])
    row("Freeze from the base: Emb+Head / +o_proj / +q,k,v,o / all",
        [" / ".join(_acc(v["freeze"].get(k)) for k in r["settings"]["freeze_rows"]) if v.get("freeze") else "not run"
         for v in verdicts.values()])
    row("verdict", [V.ANSWER_TEXT[v["answer"]] for v in verdicts.values()])
    steps = []
    for pid, e in r["pairs"].items():
        tr = e["pairs"].get("training") or {}
        for role in ("base", "reasoning"):
            if role in tr and tr[role].get("rounds"):
                steps.append(f"{pid} {tr[role]['stage']}: {'+'.join(map(str, tr[role]['rounds']))} steps")
    claims = T.claims_table(r)
    held = {}
    if claims is not None:
        for row_ in claims.rows:
            held.setdefault(row_[1], []).append(bool(row_[-1]))
    out = "\n".join(lines) + "\n\n"
    out += f"Training steps (main run + extensions): {'; '.join(steps)}.\n" if steps else ""
    if held:
        out += ("The paper's Delta claims hold in: " + "; ".join(f"{c}: {sum(h)} of {len(h)} pairs"
                                                                for c, h in held.items()) + ".\n")
    return out + f"\nMeasured by {_provenance(r)}.\n"


def block_time(r: dict) -> str:
    """docs/lab.md: wall time per stage of the committed run."""
    t = r["timing"]
    rows = [f"| {k} | {v / 60:.1f} min |" for k, v in t.items()]
    after = t.get("total", 0) - t.get("train_pairs", 0)
    return ("| stage | wall time |\n|---|---|\n" + "\n".join(rows) + "\n\n"
            f"With the pairs cached (a second run), training is skipped: about {after / 60:.1f} min. "
            f"Measured on {r['settings']['machine']} shared with other jobs: read as upper bounds.\n")


def block_readme(r: dict) -> str:
    """README.md: the lab's headline, one paragraph."""
    groups = V.groups(r)
    parts = []
    for name, es in groups.items():
        v = V.pair_verdict(es)
        text = f"*{name}* ({'/'.join(v['regime'] or ['-'])}, chat accuracy {_acc(v['base'])} -> {_acc(v['reasoning'])}): " \
               f"{V.ANSWER_TEXT[v['answer']]}"
        if v.get("recovered"):
            text += " (swaps recover " + ", ".join(f"{k} {_pct(x)}" for k, x in v["recovered"].items()) + " of the gap)"
        parts.append(text)
    t = r["timing"]
    return (f"What the lab found with seed {', '.join(map(str, r['settings']['seeds'] or []))} "
            f"({t.get('total', 0) / 60:.1f} min, {t.get('train_pairs', 0) / 60:.1f} of them training the pairs): "
            + "; ".join(parts) + f". Measured by {_provenance(r)}; regenerate with "
            "`python -m sfn_merge_plugin.lab.docs write`.\n")


def block_recipe(r: dict) -> str:
    """docs/lab.md: how each trained model of the run was made (steps run, batch, peak lr, the loss check)."""
    lines = []
    for pid, e in r["pairs"].items():
        tr = e["pairs"].get("training") or {}
        for role in ("base", "reasoning"):
            t = tr.get(role)
            if not t or not t.get("recipe"):
                continue
            rc = t["recipe"]
            checks = ", ".join(f"{k} loss {c['loss']:.3f} (needs <= {c['max']})" for k, c in (t.get("check") or {}).items())
            lines.append(f"- {pid} {role} (`{t['stage']}`): {'+'.join(map(str, t.get('rounds') or [rc['steps']]))} of "
                         f"{rc['steps']} steps, batch {rc['batch']}, peak lr {rc['lr']:g}, mix "
                         + ", ".join(f"{k} {w:.0%}" for k, w in rc.get("mix", {}).items())
                         + f"; {t['seconds'] / 60:.1f} min; {checks or 'no loss check'}: "
                         + ("passed" if t.get("ok") else "FAILED (the report marks the pair untrusted)") + ".")
    return "\n".join(lines) + "\n" if lines else "No model was trained in this run.\n"


BLOCKS = {"results": block_results, "time": block_time, "readme": block_readme, "recipe": block_recipe}


# --- write and check -------------------------------------------------------------------------------

def render(text: str, results) -> str:
    """Every marked block of ``text`` filled; ``results``: the offline lab's results, or ``{source: results}``
    (a callable ``source -> results`` loads only the sources the text uses)."""
    def fill(m):
        source, _, name = m.group("name").rpartition("-")
        if name not in BLOCKS:
            raise DataError(f"unknown lab docs block {m.group('name')!r}; known: "
                            + ", ".join(list(BLOCKS) + [f"{s}-{b}" for s in SOURCES if s != "lab" for b in BLOCKS]))
        data = results(source or "lab") if callable(results) else results
        return m.group(1) + BLOCKS[name](data) + m.group(4)

    return _BLOCK.sub(fill, text)


def _loader(results_file: Path):
    """source -> its results, each file read once; ``results_file`` stands in for the offline lab's."""
    cache = {}

    def get(source: str) -> dict:
        if source not in cache:
            path = Path(results_file if source == "lab" else _source_file(source))
            cache[source] = dict(load(path), committed_file=path.name)  # named in each block's provenance
        return cache[source]

    return get


def differences(files=DOC_FILES, results_file: Path = RESULTS_FILE) -> list:
    """Files whose marked blocks do not match the committed results."""
    results = _loader(results_file)
    return [str(f) for f in files if Path(f).is_file() and render(Path(f).read_text(), results) != Path(f).read_text()]


def write(files=DOC_FILES, results_file: Path = RESULTS_FILE) -> list:
    from sfn_merge_plugin.outputs import atomic_write

    results = _loader(results_file)
    changed = []
    for f in files:
        f = Path(f)
        if not f.is_file():
            continue
        text = f.read_text()
        new = render(text, results)
        if new != text:
            atomic_write(f, new)
            changed.append(str(f))
    return changed


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["publish"] and len(argv) in (2, 3):
        print(publish(argv[1], _source_file(argv[2]) if len(argv) == 3 else RESULTS_FILE))
        return 0
    if argv == ["write"]:
        print("\n".join(write()) or "up to date")
        return 0
    if argv == ["check"]:
        bad = differences()
        if bad:
            print("out of date (run `python -m sfn_merge_plugin.lab.docs write`): " + ", ".join(bad))
            return 1
        print("docs match " + ", ".join(f"docs/results/{p.name}" for p in SOURCES.values() if p.is_file()))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
