"""The static task (paper 3.1): attacked copies of training and test beats, made once against the source model."""
from __future__ import annotations

import numpy as np
import torch

from ecgbench.config.attacks import build_attack
from ecgbench.contracts.base import Beats
from ecgbench.data.catalog import eval_index
from ecgbench.engine.attack import generate
from ecgbench.execute.context import Context
from ecgbench.execute.saving import checkpoints
from ecgbench.plan.tasks import StaticTask
from ecgbench.store.io import load_arrays, save_arrays, verified
from ecgbench.store.layout import attacked_path, drop_state, partial_path
from ecgbench.store.locks import entry_lock

__all__ = ["make"]


def make(w: Context, task: StaticTask) -> dict:
    """The static set of `task` from the verified cache, or attacked now against its source model and saved."""
    ctx, p = w.catalog.data(task.dataset, task.seed), w.cfg.profile.with_seed(task.seed)
    attack = build_attack(task.attack, p, w.reg)
    path = attacked_path(w.cfg.cache, attack.name, task.key)
    s, vr = ctx.splits, ctx.dataset.value_range
    with entry_lock(path):
        a = verified(load_arrays, path)
        if a is None:
            source = w.model(task.source)[0]
            rng = np.random.default_rng(p.seed)
            cap = p.static_train_cap
            idx = np.sort(rng.permutation(len(s.train))[:cap]) if cap else np.arange(len(s.train))
            sub = eval_index(s.test.y, attack, p)
            test_idx = np.arange(len(s.test)) if sub is None else sub
            run = dict(seed=p.seed, batch=p.attack_batch_for(attack), device=w.device)
            parts = {part: partial_path(w.cfg.cache, attack.name, task.key, part) for part in ("train", "test")}
            what = {part: f"{attack.label} {part} vs {task.source.model}" for part in parts}
            tr_adv, _ = generate(source, attack, torch.as_tensor(s.train.x[idx])[:, None], s.train.y[idx], vr,
                                 desc=what["train"], checkpoints=checkpoints(w, parts["train"], what["train"]), **run)
            te_adv, te_stats = generate(source, attack, torch.as_tensor(s.test.x[test_idx])[:, None], s.test.y[test_idx], vr,
                                        desc=what["test"], checkpoints=checkpoints(w, parts["test"], what["test"]), **run)
            w.attack_calls += 2
            a = {"source": idx, "train": tr_adv, "test": te_adv, "test_index": test_idx,
                 "within_budget": np.float64(te_stats["within_budget"]), "linf_median_found": np.float64(te_stats["linf_median_found"])}
            save_arrays(path, **a)
            for part in parts.values():
                drop_state(part)
    train = s.train.take(a["source"])
    return {"key": task.key, "source": a["source"], "test": a["test"], "test_index": a["test_index"],
            "train": Beats(a["train"], train.y, train.groups, np.ones(len(train), dtype=bool)),
            "source_model": task.source.model,
            "stats": {"within_budget": float(a["within_budget"]), "linf_median_found": float(a["linf_median_found"])}}
