"""Train the lab's independent stages at the same time: after the shared pretraining, each branch of stages
(``skill_pretrain`` -> ``skill_sft``, and ``circuit_sft``) trains in its own process on its share of the
threads.

Why: the lab's 1M-parameter models are too small for a second torch thread to help (measured: one step
takes about as long on 1 thread as on 2), so two branches on one thread each finish in the time of the
longer one. Each stage still trains on exactly its recipe, seed and parent, and is cached under a key
holding the thread count it trained with (``pairs.stage_key``); on a single thread the branches run one
after the other in this process.
"""

from __future__ import annotations

from pathlib import Path


def branches(recipes: dict, root: str) -> list:
    """The chains of stages that start from ``root``: ``[["circuit_sft"], ["skill_pretrain", "skill_sft"]]``."""
    stages = [s for s in recipes if s != "model"]
    children = {s: [c for c in stages if recipes[c]["parent"] == s] for s in stages}
    chains = []
    for first in children[root]:
        chain = [first]
        while len(children[chain[-1]]) == 1:
            chain.append(children[chain[-1]][0])
        if children[chain[-1]]:
            raise ValueError(f"stage {chain[-1]!r} has several children: a branch must be a chain")
        chains.append(chain)
    return chains


def train_branches(recipes: dict, root: str, parent, seed: int, cache_dir, exclude: set, progress: bool) -> dict:
    """Train (or load) every stage below ``root`` (its ``StageResult`` is ``parent``); {stage: StageResult}."""
    import torch

    from sfn_merge_plugin.lab import pairs

    chains = branches(recipes, root)
    workers = min(len(chains), torch.get_num_threads())
    threads = max(1, torch.get_num_threads() // max(1, workers))
    cached = all(pairs.stage_path(s, recipes, seed, cache_dir, threads).joinpath("sfn_lab_stage.json").is_file()
                 for chain in chains for s in chain)
    if workers < 2 or cached:
        done = {}
        for chain in chains:
            done.update(_train_chain(chain, recipes, seed, str(cache_dir), exclude, parent.path, progress, None,
                                     threads))
        return done
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: this process has run torch's OpenMP pool, which a forked child cannot use safely
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_train_chain, chain, recipes, seed, str(cache_dir), exclude, parent.path, progress, i,
                               threads) for i, chain in enumerate(chains)]
        done = {}
        for future in futures:
            done.update(future.result())
    return done


class _Parent:
    """A trained stage in the role of a parent (``run_stage`` reads ``.path``)."""

    def __init__(self, path: str):
        self.path = path


def _train_chain(chain: list, recipes: dict, seed: int, cache_dir: str, exclude: set, parent_path: str,
                 progress: bool, position, threads: int) -> dict:
    """One branch, stage after stage, on ``threads`` torch threads (in a worker process or this one)."""
    import torch

    from sfn_merge_plugin.lab import pairs
    from sfn_merge_plugin.tiny_tokenizer import build_tokenizer

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        tokenizer = build_tokenizer()
        done = {recipes[chain[0]]["parent"]: _Parent(parent_path)}
        for stage in chain:
            done[stage] = pairs.run_stage(stage, recipes, seed, Path(cache_dir), tokenizer, exclude, done, progress,
                                          position)
        return {s: done[s] for s in chain}
    finally:
        torch.set_num_threads(before)
