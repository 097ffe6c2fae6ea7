"""Destroy modules of a loaded HF model in memory, and put every original tensor back exactly.

A thin layer over the intervention engine (``sfn_merge_plugin.intervention``): a sweep cell
(``Destruction``) is resolved with the shared selectors, turned into an ``Edit`` by
``destroy_edit`` (Zero/ReInit, the kernel and seeds of ``sfn_destroy``, so a destroyed model holds the
bytes ``mergekit-yaml`` would write) or ``remove_edit`` (whole layers skipped, exactly the model
``remove_layers.remove_recipe`` + mergekit writes), and applied with ``intervene``, which restores every
original on exit (storage swap on the CPU, a host copy of the originals on an accelerator; a tied
lm_head untied for a cell that gives the head and the embedding different values).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from sfn_merge_plugin.intervention import LAYER_LISTS, intervene, layer_list, model_layout  # noqa: F401  (re-exported)
from sfn_merge_plugin.selectors import SelectorError, parse_layers, select

METHODS = ("zero", "reinit", "remove")


@dataclass(frozen=True)
class Destruction:
    """One sweep cell: ``method`` applied to ``modules`` (a selector; "-" for remove) in ``layers``."""

    modules: str
    method: str
    layers: str
    seed: int = 0
    mean: float = 0.0
    std: float = 0.02

    @property
    def label(self) -> str:
        what = "layers" if self.method == "remove" else self.modules
        return f"{self.method}({what})@{self.layers}"


def resolve(layout, destruction: Destruction) -> list:
    """The Selected tensors of a Zero/ReInit cell, or the layer indices a Remove cell skips."""
    if destruction.method == "remove":
        drop = parse_layers(destruction.layers).resolve(layout.num_layers)
        if len(drop) == layout.num_layers:
            raise SelectorError(f"remove: layers {destruction.layers!r} are all {layout.num_layers} layers; keep at least one")
        return drop
    if destruction.method not in METHODS:
        raise SelectorError(f"destruction method {destruction.method!r}: choose from {', '.join(METHODS)}")
    return select(layout, destruction.modules, destruction.layers)


def edit_of(model, layout, destruction: Destruction):
    """The engine's Edit for one sweep cell."""
    from sfn_merge_plugin.intervention import destroy_edit, remove_edit

    if destruction.method == "remove":
        return remove_edit(layout, destruction.layers, destruction.label)
    d = destruction
    return destroy_edit(model, layout, resolve(layout, d), d.method, d.seed, d.mean, d.std, d.label)


@contextlib.contextmanager
def destroyed_model(model, destruction: Destruction, layout=None):
    """``with destroyed_model(model, d): ...`` runs the body on the destroyed model, then restores it."""
    layout = layout or model_layout(model)
    with intervene(model, edit_of(model, layout, destruction), layout):
        yield model


def tied_head_note(layout, selected) -> str | None:
    """The report's note for a cell that unties a tied model's lm_head, or None."""
    head = next((t for t in layout.tensors if t.tied_to is not None), None)
    names = {s.name for s in selected}
    if head is None or not names & {head.name, head.tied_to}:
        return None
    if head.name not in names:
        return ("tied lm_head: a cell that destroys embed but not lm_head unties them for the cell; the head keeps "
                "the original values (as sfn_destroy's untied output does). Select embed,lm_head to destroy both")
    if head.tied_to not in names:
        return ("tied lm_head: a cell that destroys lm_head but not embed unties them for the cell; the embedding "
                "keeps the original values (as sfn_destroy's untied output does)")
    return ("tied lm_head: a cell that destroys embed and lm_head destroys both (under ReInit each with its own "
            "draw, as sfn_destroy does)")
