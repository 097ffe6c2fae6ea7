"""The lab's training loop: a fresh tiny model, plain AdamW on completions only, the recipes' learning-rate
schedules and the windowed final loss that decides early stops and the trust check."""

from __future__ import annotations

import math


def fresh_model(model_spec: dict, seed: int):
    import torch
    from transformers import AutoModelForCausalLM

    from sfn_merge_plugin.tiny_models import tiny_config

    config = tiny_config("qwen2", tied=False, **model_spec)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def train(model, kinds, batches, recipe: dict, seed: int, desc: str = "", progress: bool = True,
          stop: dict | None = None, position: int | None = None) -> dict:
    """Plain AdamW loop (betas 0.9/0.98, no weight decay), the recipe's schedule, grad-clip 1.0, loss on
    completions only. With ``stop`` ({kind: loss}), it ends early once, after 30% of the steps, the mean
    loss of the last ``WINDOW`` steps of every such kind is below its value.

    Returns per-kind loss curves (mean per-token loss of each kind's rows at each step, None when a batch
    held none of that kind)."""
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], betas=(0.9, 0.98), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(recipe))
    curves = {k: [] for k in kinds}
    bar = tqdm(batches, desc=desc, disable=not progress, leave=False, mininterval=1.0, position=position)
    for step, (ids, labels, row_kinds) in enumerate(bar):
        logits = model(input_ids=ids).logits[:, :-1]
        target = labels[:, 1:]
        tok_loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="none"
        ).view(target.shape)
        mask = (target != -100).float()
        loss = (tok_loss * mask).sum() / mask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            per_row = (tok_loss * mask).sum(1) / mask.sum(1).clamp(min=1)
            for i, k in enumerate(kinds):
                sel = row_kinds == i
                curves[k].append(float(per_row[sel].mean()) if sel.any() else None)  # None: kind not in this batch
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if stop and step >= 0.3 * len(batches) and _converged(curves, stop):
            break
    bar.close()
    model.eval()
    return curves


WINDOW = 20  # steps averaged for the final loss and the early stop


def _converged(curves: dict, stop: dict) -> bool:
    final = final_losses(curves)
    return all(final.get(k) is not None and final[k] <= v for k, v in stop.items())


def lr_schedule(recipe: dict):
    """Linear warm-up, then ``cosine`` decay to 0, or ``wsd``: constant until the last ``decay`` share of the
    steps, then linear to 0 (keeps the rate high while a circuit forms, the loss drop comes later)."""
    warmup, steps = recipe["warmup"], recipe["steps"]
    kind = recipe.get("schedule", "cosine")
    decay_from = int(steps * (1 - recipe.get("decay", 0.2)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "wsd":
            return 1.0 if step < decay_from else max(0.0, (steps - step) / max(1, steps - decay_from))
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def final_losses(curves: dict, window: int = WINDOW) -> dict:
    out = {}
    for k, c in curves.items():
        tail = [v for v in c[-window:] if v is not None]
        out[k] = sum(tail) / len(tail) if tail else None
    return out
