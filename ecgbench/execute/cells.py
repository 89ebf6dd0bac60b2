"""The cell task: attack one trained model (or take its static test set), score it, and write the cell file.

A cell file is the unit of results: the report reads nothing else. Failed cells are written too,
with their one-line error, so a run reports what failed and a rerun retries only with `--retry-failed`.
"""
from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecgbench import metrics
from ecgbench.config.attacks import build_attack
from ecgbench.contracts.base import Model
from ecgbench.contracts.checks import check_logits
from ecgbench.contracts.errors import Known, one_line
from ecgbench.data.catalog import eval_index
from ecgbench.engine.attack import batched, generate
from ecgbench.engine.progress import OutOfTime
from ecgbench.engine.sanity import check_model
from ecgbench.engine.detect import DetectorAware
from ecgbench.engine.train import predict
from ecgbench.execute.context import Context
from ecgbench.execute.saving import checkpoints
from ecgbench.plan.cells import Cell
from ecgbench.plan.tasks import CellTask
from ecgbench.store.io import write_json
from ecgbench.store.layout import drop_state, partial_path

__all__ = ["score", "record", "evaluate", "summary", "per_beat_eps", "in_units"]


def score(w: Context, task: CellTask) -> dict:
    """Attack and score one cell, write its file atomically, and return its record (failed cells too)."""
    rec = record(w, task)
    write_json(Path(task.path), rec)
    return rec


def record(w: Context, task: CellTask) -> dict:
    """The cell's record as its file holds it: the cell, its key, status, and what `evaluate` found (or the error)."""
    cell = task.cell
    rec: dict[str, Any] = {"cell": cell.as_dict(), "key": task.cell_key}
    t0 = time.perf_counter()
    try:
        if task.error is not None:
            raise Known(task.error)
        rec.update(evaluate(w, task), status="ok")
    except (KeyboardInterrupt, OutOfTime):
        raise
    except Known as exc:
        rec.update(status="failed", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - one failed cell must not stop the run
        rec.update(status="failed", error=one_line(exc, w.reg, dataset=cell.dataset, model=cell.model, attack=cell.attack),
                   traceback=traceback.format_exc())
    rec["seconds"] = time.perf_counter() - t0
    return rec


def evaluate(w: Context, task: CellTask) -> dict:
    """The cell's record: clean and evaluated predictions on the same test beats, metrics, and what the attack did."""
    cell = task.cell
    ctx, p = w.catalog.data(cell.dataset, cell.seed), w.cfg.profile.with_seed(cell.seed)
    ds, s = ctx.dataset, ctx.splits
    attack = build_attack(cell.attack, p, w.reg, cell.eps) if cell.attack else None
    net, info, weights = w.model(task.train)
    sub = eval_index(s.test.y, attack, p)
    idx = np.arange(len(s.test)) if sub is None else sub
    x_clean, y = s.test.x[idx], s.test.y[idx]
    clean_pred = _logits(w, net, x_clean, cell.model, ctx.n_classes).argmax(1)
    per_beat = None
    result: dict[str, Any] = {"train": info, "checkpoint": task.train.key, "weights": weights, "classes": list(ds.classes),
                              "trained_on": task.train.trained_on}
    if "outside" in info:  # trained elsewhere: its class, checkpoint and checksum
        result.update(outside=info["outside"], trained_on="elsewhere, evaluated as given")
    if sub is not None:
        result["eval_index"] = sub.tolist()
    if cell.mode == "clean":
        x_eval = x_clean
        result["sanity"] = check_model(net, x_clean, y, w.device)  # the row's flags (AutoAttack's checks)
    elif cell.mode == "static":
        static = w.static_set(task.static)
        x_eval = static["test"]
        result["static_source"] = static["source_model"]
        result["budget"] = static["stats"]
    else:
        target = DetectorAware(net) if cell.mode == "adaptive-detect" else net
        partial = partial_path(w.cfg.cache, attack.name, task.cell_key, "cell")
        per_beat = None if cell.eps_uv is None else per_beat_eps(cell.eps_uv, s.test.scale, idx, cell.dataset, ds.value_range)
        x_eval, budget = generate(target, attack, torch.as_tensor(x_clean)[:, None], y, ds.value_range, seed=p.seed,
                                  batch=p.attack_batch_for(attack), device=w.device, desc=f"{attack.label} vs {cell.model}",
                                  checkpoints=checkpoints(w, partial, f"{attack.label} vs {cell.model}"), eps=per_beat)
        drop_state(partial)
        w.attack_calls += 1
        found = budget.pop("linf_found", None)
        if found is not None and per_beat is None:  # judged at any eps later; a budget per beat is judged now
            result["linf_found"] = found
        result["budget"] = budget
    pred = _logits(w, net, x_eval, cell.model, ctx.n_classes).argmax(1)
    result["metrics"] = metrics.classification(y, pred, ds.classes)
    result["clean_accuracy"] = float((clean_pred == y).mean())
    robust = pred == y
    if cell.mode == "adaptive-detect":  # the system's answer: right, or flagged as attacked
        robust |= batched(net.detect, x_eval, w.device).argmax(1) == 1
        result["system_accuracy"] = float(robust.mean())
    result["correct"] = "".join("1" if c else "0" for c in robust)
    result["y"] = "".join(str(int(c)) for c in y)  # each scored beat's class, aligned with `correct`
    if attack is not None:
        result["attack"] = attack.config()
        result["units"] = in_units(attack.eps if per_beat is None else per_beat, s.test.scale, idx, ds.value_range)
        if per_beat is not None:
            result["attack"]["eps"] = None  # one per beat: `units` and the cell's eps_uv say which
        result["attack_kind"] = getattr(attack, "kind", "gradient")
        result["success_rate"] = metrics.success_rate(y, clean_pred, pred)
        result["perturbation"] = metrics.perturbation(x_clean, x_eval)
    result.update(_extras(w, net, x_clean, x_eval, y, attack is not None, p.seed))
    result["examples"] = _examples(x_clean, x_eval, y, ctx.n_classes)
    return result


def per_beat_eps(eps_uv: float, scale: np.ndarray | None, idx: np.ndarray, dataset: str,
                 value_range: tuple[float, float]) -> np.ndarray:
    """Each beat's budget on its own scale for `eps_uv` microvolts: eps_uv over the microvolts one unit of the beat is."""
    if scale is None:
        raise Known(f"--eps-uv: dataset {dataset!r} does not state its beats' scale in microvolts")
    uv_per_unit = scale[idx] / (value_range[1] - value_range[0])
    if not (np.isfinite(uv_per_unit) & (uv_per_unit > 0)).all():
        raise Known(f"--eps-uv: dataset {dataset!r} has test beats of unknown or zero amplitude")
    return (eps_uv / uv_per_unit).astype(np.float32)


def in_units(eps: float | np.ndarray, scale: np.ndarray | None, idx: np.ndarray,
             value_range: tuple[float, float]) -> dict | None:
    """The budget of the beats a cell attacked in both units, each as median, 5th and 95th percentile over the
    beats: `eps` on the beat scale (one for all, or one per beat) and microvolts; None without a scale."""
    if scale is None:
        return None
    uv_per_unit = scale[idx].astype(np.float64) / (value_range[1] - value_range[0])
    eps = np.broadcast_to(np.asarray(eps, dtype=np.float64), uv_per_unit.shape)
    ok = np.isfinite(uv_per_unit)
    if not ok.any():
        return None

    def spread(v: np.ndarray) -> dict:
        p5, median, p95 = np.percentile(v, [5, 50, 95])
        return {"median": round(float(median), 6), "p5": round(float(p5), 6), "p95": round(float(p95), 6)}
    return {"eps": spread(eps[ok]), "uV": spread(eps[ok] * uv_per_unit[ok])}


def _logits(w: Context, net: torch.nn.Module, x: np.ndarray, name: str, n_classes: int) -> np.ndarray:
    logits = predict(net, x, w.device)
    check_logits(logits, name, len(x), n_classes)
    return logits


def _extras(w: Context, net: torch.nn.Module, x_clean: np.ndarray, x_eval: np.ndarray, y: np.ndarray, attacked: bool,
            seed: int) -> dict:
    """Attack detection (a model with `detect`) and generator similarity (a model with `generate`; paper Table 3)."""
    out: dict[str, Any] = {}
    if hasattr(net, "detect"):
        flag_eval = batched(net.detect, x_eval, w.device).argmax(1)
        flag_clean = batched(net.detect, x_clean, w.device).argmax(1)
        out["detection"] = {"flagged_eval": float(flag_eval.mean()), "flagged_clean": float(flag_clean.mean())}
        if attacked:
            moved = np.abs(x_eval - x_clean).max(1) > 0
            out["detection"]["accuracy"] = float(np.concatenate([flag_eval[moved] == 1, flag_clean == 0]).mean())
    if hasattr(net, "generate"):
        similarity = getattr(net, "similarity", Model.similarity)  # the contract's default for a bare nn.Module
        torch.manual_seed(seed)  # G's noise z
        with torch.no_grad():
            g = torch.cat([net.generate(torch.as_tensor(x_eval[i:i + 2048], device=w.device)[:, None],
                                        torch.as_tensor(y[i:i + 2048], device=w.device)) for i in range(0, len(y), 2048)])
        out["similarity"] = similarity(g[:, 0].float().cpu().numpy(), x_clean)
    return out


def _examples(x: np.ndarray, x_adv: np.ndarray, y: np.ndarray, n_classes: int) -> dict:
    """The first test beat of each class, clean and as evaluated, for the overlay figure (paper Fig. 3)."""
    idx = [int(np.flatnonzero(y == c)[0]) for c in range(n_classes) if (y == c).any()]
    return {"index": idx, "y": [int(y[i]) for i in idx],
            "clean": np.round(x[idx], 5).tolist(), "evaluated": np.round(x_adv[idx], 5).tolist()}


def summary(cell: Cell, record: dict) -> str:
    """The one line a run prints when a cell finishes."""
    if record["status"] != "ok":
        return f"FAILED {cell.label}: {record['error']}"
    acc = record.get("system_accuracy", record["metrics"]["accuracy"]) * 100
    budget = (f", eps {cell.eps:g}" if cell.eps is not None else "") + (f", {cell.eps_uv:g} uV" if cell.eps_uv is not None else "")
    what = "clean accuracy" if cell.mode == "clean" else f"robust accuracy after {cell.attack} ({cell.mode}{budget})"
    seed = f" seed {cell.seed}" if cell.seed else ""
    return f"{cell.dataset} {cell.model}{seed}: {what}: {acc:.1f}% ({record['seconds']:.1f} s)"
