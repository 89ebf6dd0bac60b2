"""Attacking beats in batches, with the harness's checks on every batch (`contracts.checks.check_adversarial`)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch

from ecgbench import log
from ecgbench.contracts.base import Attack
from ecgbench.contracts.checks import TOL, check_adversarial
from ecgbench.engine.progress import Checkpoints, Deadline, OutOfTime, rng_state, set_rng_state
from ecgbench.engine.train import predict

__all__ = ["generate", "bounded", "batched"]


def bounded(attack: Attack) -> bool:
    """Whether the attack stays in its eps-ball by construction (minimisation attacks do not)."""
    return bool(getattr(attack, "bounded", True))


def generate(model: torch.nn.Module, attack: Attack, x: torch.Tensor, y: np.ndarray, value_range: tuple[float, float], *,
             seed: int, batch: int, device: torch.device, desc: str = "attack",
             checkpoints: Checkpoints | None = None, eps: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Adversarial beats [n, window] for beats `x` [n, 1, window]; a minimisation attack's results beyond eps are replaced by the clean beat.

    `eps`: one budget per beat (a budget in microvolts on beats of different amplitudes), handed to a
    bounded attack that takes one (`per_beat`) and judged per beat for a minimisation attack; None: `attack.eps`.

    The stats hold, for a minimisation attack, each beat's L-inf when its raw result fools the
    model (None where it does not), so a report can judge it at any eps from this one run.

    `checkpoints`: save the batches done (and the random generators after them) every
    `checkpoints.seconds`, and before the next batch would pass its deadline (then `OutOfTime`); a
    saved state is continued, so a stopped attack ends with the beats an unstopped one makes. A batch
    still running at the deadline stops at its next query of the model, and only that batch is lost
    (a profile's `costly_attack_batch` keeps it small for attacks that take hours).
    """
    model.eval()
    np.random.seed(seed)  # ART draws random starts from numpy's global generator
    torch.manual_seed(seed)
    outs, linfs = [], []
    saved = checkpoints.load() if checkpoints is not None else None
    if saved is not None:
        outs, linfs = [saved["adv"]], [saved["linf"]]
        set_rng_state(saved["rng"])
    done = sum(len(o) for o in outs)
    last_save, seconds, after = time.perf_counter(), 0.0, None
    budget = torch.as_tensor(eps, dtype=torch.float32) if eps is not None else torch.full((len(x),), attack.eps)
    for i in log.bar(range(done, len(x), batch), desc=desc):
        if checkpoints is not None and i > done:
            out_of_time = checkpoints.deadline is not None and not checkpoints.deadline.allows(2 * seconds + 1.0)
            if out_of_time or time.perf_counter() - last_save >= checkpoints.seconds:
                checkpoints.save({"adv": torch.cat(outs), "linf": torch.cat(linfs), "rng": rng_state()})
                last_save = time.perf_counter()
                if out_of_time:
                    raise OutOfTime(f"{desc}: stopped after {i} of {len(x)} beats: time limit")
        t0 = time.perf_counter()
        xb = x[i:i + batch].to(device)
        yb = torch.as_tensor(y[i:i + batch], device=device)
        eps_b = budget[i:i + batch].to(device) if eps is not None and bounded(attack) else None
        try:
            with _stops_at(model, checkpoints.deadline if checkpoints is not None else None):
                adv = attack(model, xb, yb, value_range) if eps_b is None else attack(model, xb, yb, value_range, eps=eps_b)
        except OutOfTime:
            if i > done:  # what the batches before this one made, with the generators as they left them
                checkpoints.save({"adv": torch.cat(outs), "linf": torch.cat(linfs), "rng": after})
            raise OutOfTime(f"{desc}: stopped in the batch from beat {i} of {len(x)} (kept: {i}): time limit") from None
        linf = check_adversarial(adv, xb, attack.label, budget[i:i + batch], bounded(attack), value_range)
        outs.append(adv.detach().float().cpu())
        linfs.append(linf.cpu())
        seconds = time.perf_counter() - t0
        after = rng_state() if checkpoints is not None else None
    x_adv, linf = torch.cat(outs), torch.cat(linfs)
    within = linf <= budget + TOL
    stats: dict[str, Any] = {"within_budget": float(within.float().mean()), "linf_median_found": float(linf.median())}
    if not bounded(attack):
        fooled = predict(model, x_adv, device).argmax(1) != y
        stats["linf_found"] = [round(float(v), 6) if f else None for v, f in zip(linf.tolist(), fooled)]
        x_adv = torch.where(within[:, None, None], x_adv, x.cpu())
    return x_adv[:, 0].numpy(), stats


@contextmanager
def _stops_at(model: torch.nn.Module, deadline: Deadline | None) -> Iterator[None]:
    """Within it, a forward pass of `model` after `deadline` raises `OutOfTime`: an attack's own loop (ART's Square:
    thousands of queries in one call) cannot be asked between its steps, but each step queries the model."""
    if deadline is None:
        yield
        return

    def check(module: torch.nn.Module, args: Any) -> None:
        if not deadline.allows(0.0):
            raise OutOfTime("time limit")

    handle = model.register_forward_pre_hook(check)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def batched(fn: Any, x: np.ndarray, device: torch.device, batch: int = 2048) -> np.ndarray:
    """`fn` (a model head such as `detect`) over beats [n, window] in batches, as a numpy array."""
    t = torch.as_tensor(x, dtype=torch.float32)[:, None]
    return torch.cat([fn(t[i:i + batch].to(device)).float().cpu() for i in range(0, len(t), batch)]).numpy()
