"""``results.json``: one schema, read and written by the same type (``LabResults``).

A lab folder's every table, figure and sentence is drawn from this file. Paths in it are absolute; the
folder's own name is recorded (``settings.output``), so a folder that was moved or renamed (or built
under a temporary name) is read with its paths pointing inside it again.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from sfn_merge_plugin.errors import DataError
from sfn_merge_plugin.lab.config import STAGES

RESULTS_NAME = "results.json"
FORMAT = "sfn-lab-results/2"
READABLE = ("sfn-lab-results/1", FORMAT)  # /1 had absolute paths and no "ran"/"environment" record
PATH_KEYS = ("folder", "summary", "recipe", "provenance", "model", "data", "freeze_report", "figures", "base",
             "reasoning", "path", "parent")  # keys whose values are paths (rewritten relative on write)


@dataclass
class Settings:
    """What the run was asked for and where it ran (the report's Reproduce section and docs come from here)."""

    size: str = "full"  # size preset (config.SIZES)
    seeds: list | None = None  # pair seeds of the offline pairs (None: the user's checkpoints)
    base: str | None = None  # the user's base model, as given
    reasoning: str | None = None  # the user's reasoning model, as given
    stages: list = field(default_factory=lambda: list(STAGES))  # stages asked for (pairs always runs)
    heldout_problems: int = 0  # chain problems every model is graded on
    chat_probes: int = 0  # chat probes of the lab's own pairs
    freeze_seeds: int = 1  # training seeds per Freeze row
    freeze_rows: list = field(default_factory=list)  # Freeze presets (config.FREEZE_ROWS)
    freeze_pairs: list = field(default_factory=list)  # pairs the Freeze stage trained
    swaps: list = field(default_factory=list)  # Table 1 rows: [label, selector]
    max_new_tokens: int = 0  # generation budget per answer
    destroy_layers: str | None = None  # --destroy-layers as given (None: each pair's default)
    device: str = "cpu"  # where the models ran
    torch_threads: int = 0  # torch intra-op threads during the run
    sfn_version: str = ""
    torch_version: str = ""
    python: str = ""
    machine: str = ""  # "x86_64, 2 CPUs"
    environment: dict = field(default_factory=dict)  # versions and CPU kernel path (environment.describe)
    command: str = ""  # the command line that reproduces the run
    cache_dir: str = ""  # where trained pairs were cached
    output: str = ""  # the lab folder's absolute path when written (paths below it move with the folder)


@dataclass
class LabResults:
    """The whole of results.json."""

    settings: Settings
    pairs: dict  # pair id -> {stage name: what that stage measured}
    timing: dict  # stage name -> seconds (and "train_pairs", "total")
    format: str = FORMAT

    def ran(self, pid: str) -> list:
        """Stages that produced results for one pair, in the lab's order."""
        return [s for s in STAGES if s in self.pairs[pid]]

    def to_json(self, root: Path | None = None) -> dict:
        """The JSON document; with ``root``, paths under ``settings.output`` are rewritten to ``root``."""
        doc = {"format": self.format, "settings": asdict(self.settings), "pairs": self.pairs, "timing": self.timing}
        return _moved(doc, self.settings.output, root)

    @classmethod
    def from_json(cls, doc: dict, root: Path | None = None) -> "LabResults":
        if not isinstance(doc, dict) or doc.get("format") not in READABLE:
            got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise DataError(f"results.json: format {got!r} is not a lab results file ({', '.join(READABLE)}); "
                            "rerun `sfn lab` to write one")
        known = {f.name for f in fields(Settings)}
        settings = Settings(**{k: v for k, v in (doc.get("settings") or {}).items() if k in known})
        if root is not None:
            doc = _moved(doc, settings.output, root)
            settings.output = str(root)
        return cls(settings=settings, pairs=doc["pairs"], timing=doc.get("timing") or {}, format=FORMAT)

    def write(self, folder, publish: Path | None = None) -> Path:
        """Write ``folder/results.json``; ``publish``: the folder's final name (it is built under a temporary one)."""
        from sfn_merge_plugin.outputs import atomic_write_json

        folder = Path(folder)
        final = Path(publish or folder).absolute()
        doc = _moved(self.to_json(), str(folder.absolute()), final)
        doc["settings"]["output"] = str(final)
        return atomic_write_json(folder / RESULTS_NAME, doc)

    @classmethod
    def read(cls, folder) -> "LabResults":
        folder = Path(folder)
        path = folder / RESULTS_NAME
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"{path}: no such file; give a folder written by `sfn lab`") from None
        except ValueError as exc:
            raise DataError(f"{path}: not valid JSON ({exc}); rerun `sfn lab`") from None
        return cls.from_json(doc, folder.absolute())


def _moved(obj, old: str | None, new: Path | None, key: str | None = None):
    """Path values (under ``PATH_KEYS``) inside folder ``old`` rewritten to the same place inside ``new``."""
    if not old or new is None or str(new) == old:
        return obj
    if isinstance(obj, dict):
        return {k: _moved(v, old, new, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_moved(v, old, new, key) for v in obj]
    if isinstance(obj, str) and key in PATH_KEYS and (obj == old or obj.startswith(old.rstrip(os.sep) + os.sep)):
        return str(new) + obj[len(old.rstrip(os.sep)):]
    return obj
