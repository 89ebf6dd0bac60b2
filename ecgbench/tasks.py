"""The task functions: train a model, make a static attacked set, attack and score a cell.

Each is a function of its spec (plain JSON) and a `Worker` (one per process: it holds the loaded
beats and a few models in memory). Inputs come from the store and outputs go to it, written
atomically and verified when read back; a damaged entry is reported, deleted and recomputed. A
notebook uses the same functions:

    w = Worker(cfg)
    net, info, key = w.trained(w.keys.train_spec("mitbih", "kachuee", None, seed=0))
"""
from __future__ import annotations

import hashlib
import inspect
import io
import sys
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecgbench import log, metrics
from ecgbench.api import Attack, Beats, PluginError
from ecgbench.contracts import TOL, check_adversarial, check_beats, check_logits
from ecgbench.data import Splits, load_beats, prepare
from ecgbench.plan import Cell, RunConfig, Task, build_attack, parse_attack, seed_profile, trains_on_static
from ecgbench.profiles import Profile
from ecgbench.registry import Registry, RegistryError, registry as default_registry
from ecgbench.store import (Damaged, cache_key, entry_lock, load_arrays, load_entry, read_cell, save_arrays, save_entry,
                            verified, warn_damaged, write_json)
from ecgbench.accel import accelerate
from ecgbench.train import fit, predict

__all__ = ["DataContext", "Keys", "Worker", "DetectorAware", "DetectorAwareLoss", "code_hash", "resolve_device"]


class DetectorAwareLoss(torch.nn.CrossEntropyLoss):
    """What a detector-aware gradient attack maximises: the classifier's cross-entropy minus the detector's margin.

    On DetectorAware's K+1 logits: CE over the K classes, minus relu(d_attacked - d_clean), so the
    ascent raises the loss of the true class while pushing the beat back under the detector's
    threshold (Carlini & Wagner 2017, section 5). A CrossEntropyLoss subclass, so ART hands it
    index labels; used by the ART gradient attacks (`adapters.art_classifier`).
    """

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z, flag_margin = logits[:, :-1], logits[:, -1] - logits[:, :-1].max(1).values
        return torch.nn.functional.cross_entropy(z, y.long()) - torch.relu(flag_margin).mean()


class DetectorAware(torch.nn.Module):
    """Classifier and detector as one K+1-way model: class K ("detected") wins when the detector fires.

    Logit K is max_j z_j + (d_attacked - d_clean), Carlini & Wagner's (2017) construction, so an
    untargeted attack on this model must cross a class boundary without tripping the detector.
    ART's gradient attacks maximise `attack_loss`, which never rewards a step into class K; the
    other attacks see only the K+1 logits and may end in K, where the beat counts as robust.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.attack_loss = DetectorAwareLoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, d = self.model(x), self.model.detect(x)
        return torch.cat([z, (z.max(1).values + d[:, 1] - d[:, 0])[:, None]], 1)


def code_hash(obj: Any) -> str:
    """Hash of the source file that defines a plugin, so editing a plugin invalidates its cached results."""
    try:
        return cache_key(Path(inspect.getsourcefile(obj) or "").read_text())
    except (OSError, TypeError):
        return "unknown"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available on this machine")
    return torch.device(name)


def beats_digest(beats: Beats) -> str:
    """Content hash of the beats: what the checkpoints and cells were computed from, on any machine."""
    h = hashlib.sha256()
    for a in (beats.x, beats.y, beats.groups.astype(str)):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


@dataclass
class DataContext:
    dataset: Any
    splits: Splits
    x_test: torch.Tensor
    settings: dict
    notes: list[str] = field(default_factory=list)


def _data_profile(p: Profile) -> dict:
    return {k: getattr(p, k) for k in ("subset", "train_cap", "test_cap", "folds", "val_fraction", "seed")}


def _train_profile(p: Profile) -> list:
    extra = [getattr(p, "patience", None)] if getattr(p, "patience", None) is not None else []
    return [p.epochs, p.batch_size, p.smote_target, *extra]


class Keys:
    """Loads and checks each dataset once, then names every task by its content key."""

    def __init__(self, cfg: RunConfig, reg: Registry | None = None) -> None:
        self.cfg, self.reg = cfg, reg or default_registry
        self._beats: dict[str, tuple[Any, Beats, str]] = {}
        self._data: dict[tuple[str, int], DataContext] = {}

    def profile(self, seed: int) -> Profile:
        return seed_profile(self.cfg.profile, seed)

    def beats(self, name: str) -> tuple[Any, Beats, str]:
        """The dataset's beats, read (or served from a verified cache) and checked: a fault stops the run here."""
        if name not in self._beats:
            p = self.cfg.profile
            cls = self.reg.get("datasets", name)
            records = getattr(cls, "smoke_records", None) if p.subset else None
            dataset = cls(self.cfg.data_dir, records=records)
            beats, seconds, hit = load_beats(dataset, self.cfg.cache)
            check_beats(beats, name, dataset.window, len(dataset.classes), dataset.value_range)
            log.info(f"{name}: {len(beats)} beats loaded in {seconds:.2f} s ({'cache' if hit else 'raw records'})")
            self._beats[name] = (dataset, beats, beats_digest(beats))
        return self._beats[name]

    def data(self, name: str, seed: int) -> DataContext:
        """Split, caps and folds for one seed (the split and the caps are drawn with it)."""
        if (name, seed) not in self._data:
            dataset, beats, digest = self.beats(name)
            p = self.profile(seed)
            splits = prepare(dataset, beats, self.cfg.split, seed=p.seed, train_cap=p.train_cap, test_cap=p.test_cap,
                             n_folds=p.folds, val_fraction=p.val_fraction)
            settings = {"dataset": dataset.settings(), "beats": digest, "split": self.cfg.split, "profile": _data_profile(p)}
            ctx = DataContext(dataset, splits, torch.as_tensor(splits.test.x)[:, None], settings)
            counts = splits.train.counts(len(dataset.classes))
            want = min(p.train_cap, p.smote_target) if p.train_cap else 0  # a cap the class cannot fill
            ctx.notes = [f"{name}: {n} real {c} training beats, fewer than the cap of {want}; using what there is"
                         for c, n in zip(dataset.classes, counts) if n < want]
            self._data[(name, seed)] = ctx
        return self._data[(name, seed)]

    def problem(self, cell: Cell) -> str | None:
        """Why a cell cannot run at all (a plugin that does not load or an attack that does not build), else None."""
        try:
            self.reg.get("models", cell.model)
            if cell.mode != "clean":
                self.reg.get("models", self.cfg.source_model)
            if cell.attack:
                build_attack(cell.attack, self.profile(cell.seed), self.reg, cell.eps)
        except Exception as exc:  # noqa: BLE001 - reported in the cell, the run goes on
            return one_line(exc, cell, self.reg)
        return None

    def train_spec(self, dataset: str, model: str, static_key: str | None, seed: int, attack: str | None = None) -> dict:
        ctx, p = self.data(dataset, seed), self.profile(seed)
        entry = self.reg.entry("models", model)
        key = cache_key("model", ctx.settings, model, entry.value, entry.version, code_hash(self.reg.get("models", model)),
                        static_key, *_train_profile(p))
        return {"key": key, "dataset": dataset, "model": model, "seed": seed, "static_key": static_key,
                "attack": attack if static_key else None}

    def static_spec(self, dataset: str, attack: str, seed: int, source_key: str) -> dict:
        ctx, p = self.data(dataset, seed), self.profile(seed)
        a = build_attack(attack, p, self.reg)
        key = cache_key("static", ctx.settings, source_key, a.config(), code_hash(type(a)), p.static_train_cap,
                        *_subset_key(a, p))
        return {"key": key, "dataset": dataset, "attack": attack, "seed": seed, "source": self.cfg.source_model,
                "source_key": source_key}

    def cell_key(self, cell: Cell) -> str:
        """Everything that changes a cell's answer; a cell file with another key is stale and recomputed."""
        plugins = [(k, n) for k, n in (("datasets", cell.dataset), ("models", cell.model), ("models", self.cfg.source_model),
                                       ("attacks", parse_attack(cell.attack)[0] if cell.attack else None)) if n]
        versions = []
        for kind, name in plugins:
            try:
                versions.append((name, self.reg.entry(kind, name).version, code_hash(self.reg.get(kind, name))))
            except RegistryError:
                versions.append((name, "unloadable"))
        try:
            digest = self.data(cell.dataset, cell.seed).settings["beats"]
        except Exception:  # noqa: BLE001 - a dataset that fails to load fails the run before any cell
            digest = None
        defended = [] if trains_on_static(self.cfg, cell) or cell.mode == "clean" else ["trained on clean beats"]
        return cache_key("cell", asdict(cell), self.cfg.split, self.profile(cell.seed).as_dict(), versions, digest, *defended)


def _subset_key(attack: Attack, p: Profile) -> list:
    cap = getattr(p, "costly_test_cap", None)
    return [cap] if cap and getattr(attack, "costly", False) else []


def eval_index(y: np.ndarray, attack: Attack | None, p: Profile) -> np.ndarray | None:
    """The fixed stratified subset of test beats a costly attack runs on (`costly_test_cap`), or None for all."""
    cap = getattr(p, "costly_test_cap", None)
    if attack is None or not cap or not getattr(attack, "costly", False) or len(y) <= cap:
        return None
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(np.arange(len(y)), train_size=cap, random_state=p.seed, stratify=y)
    return np.sort(idx)


class Worker:
    """Runs tasks in one process: loads checkpoints and attacked sets from the store, computes the missing ones."""

    def __init__(self, cfg: RunConfig, reg: Registry | None = None, keys: Keys | None = None) -> None:
        self.cfg = cfg
        self.keys = keys or Keys(cfg, reg)
        self.reg = self.keys.reg
        self.device = resolve_device(cfg.device)
        self._nets: dict[str, tuple[torch.nn.Module, dict]] = {}
        self._static: tuple[str, dict] | None = None  # the last attacked set: cells run attack by attack
        self.trainings = 0  # models fitted (not served from cache) by this worker
        self.attack_calls = 0  # attacked sets generated by this worker

    # -- tasks ------------------------------------------------------------------------------------
    def run(self, task: Task) -> dict:
        """Run one task; returns what the driver needs to know (status, a summary line, counters)."""
        before = (self.trainings, self.attack_calls)
        if task.kind == "cell":
            record = self.cell(task.spec, task.error)
            out = {"status": record["status"], "summary": summary(Cell(**task.spec["cell"]), record),
                   "error": record.get("error")}
        else:
            try:
                (self.trained if task.kind == "train" else self.static)(task.spec)
                out = {"status": "ok"}
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - the cells that need it fail with this message
                cell = Cell(task.spec["dataset"], task.spec.get("model") or task.spec.get("source"), task.spec.get("attack"), "static")
                out = {"status": "failed", "error": one_line(exc, cell, self.reg), "traceback": traceback.format_exc()}
        out["trainings"], out["attack_calls"] = self.trainings - before[0], self.attack_calls - before[1]
        return out

    def trained(self, spec: dict) -> tuple[torch.nn.Module, dict, str]:
        """The model trained on clean beats, or on clean + static attacked beats; cached on disk, verified on load."""
        key = spec["key"]
        if key in self._nets:
            net, info = self._nets[key]
            return net, info, key
        ctx, p = self.keys.data(spec["dataset"], spec["seed"]), self.keys.profile(spec["seed"])
        cls = self.reg.get("models", spec["model"])
        path = self.cfg.cache / "checkpoints" / f"{spec['model']}-{key}.pt"
        net = cls(len(ctx.dataset.classes), ctx.dataset.window)
        with entry_lock(path):
            state, info = self._load_checkpoint(path)
            if state is None:
                static = self.static(self._static_spec_of(spec)) if spec["static_key"] else None
                torch.manual_seed(p.seed)
                s = ctx.splits
                result = fit(cls, len(ctx.dataset.classes), ctx.dataset.window, s.train, s.folds,
                             attacked=static["train"] if static else None, attacked_source=static["source"] if static else None,
                             epochs=p.epochs, batch_size=p.batch_size, smote_target=p.smote_target, device=self.device,
                             seed=p.seed, progress=log.interactive() and self.cfg.progress, **_fit_extras(p),
                             on_epoch=lambda r, m=spec["model"]: log.detail(
                                 f"train {m} fold {r['fold'] + 1} epoch {r['epoch']}: loss {r['loss']:.4f}, val {r['val_balanced_accuracy']:.3f}"))
                self.trainings += 1
                state, info = result.state, result.info
                buf = io.BytesIO()
                torch.save(state, buf)
                save_entry(path, buf.getvalue(), info=info)
                log.info(f"trained {spec['model']} on {spec['dataset']}" + (f" + {spec['attack']} static set" if spec["attack"] else "")
                         + f": val balanced accuracy {info['val_balanced_accuracy']:.3f} ({info['seconds']:.1f} s)")
        net.load_state_dict(state)
        net = accelerate(net.to(self.device), self.device).eval()  # CUDA's fast path; the CPU keeps the plain model
        self._remember(key, net, info)
        return net, info, key

    def _load_checkpoint(self, path: Path) -> tuple[dict | None, dict]:
        found = verified(_read_checkpoint, path)
        return found if found is not None else (None, {})

    def _remember(self, key: str, net: torch.nn.Module, info: dict) -> None:
        if len(self._nets) >= 4:
            self._nets.pop(next(iter(self._nets)))
        self._nets[key] = (net, info)

    def _static_spec_of(self, train_spec: dict) -> dict:
        src = self.keys.train_spec(train_spec["dataset"], self.cfg.source_model, None, train_spec["seed"])
        return self.keys.static_spec(train_spec["dataset"], train_spec["attack"], train_spec["seed"], src["key"])

    def static(self, spec: dict) -> dict:
        """Attacked copies of (a subset of) the training beats and of the test beats, made against the source model."""
        key = spec["key"]
        if self._static is not None and self._static[0] == key:
            return self._static[1]
        ctx, p = self.keys.data(spec["dataset"], spec["seed"]), self.keys.profile(spec["seed"])
        attack = build_attack(spec["attack"], p, self.reg)
        path = self.cfg.cache / "attacked" / f"{attack.name}-{key}.npz"
        s, vr = ctx.splits, ctx.dataset.value_range
        with entry_lock(path):
            a = verified(load_arrays, path)
            if a is None:
                src_model, _, _ = self.trained(self.keys.train_spec(spec["dataset"], spec["source"], None, spec["seed"]))
                rng = np.random.default_rng(p.seed)
                cap = p.static_train_cap
                idx = np.sort(rng.permutation(len(s.train))[:cap]) if cap else np.arange(len(s.train))
                sub = eval_index(s.test.y, attack, p)
                test_idx = np.arange(len(s.test)) if sub is None else sub
                x_tr = torch.as_tensor(s.train.x[idx])[:, None]
                tr_adv, _ = self.generate(src_model, attack, x_tr, s.train.y[idx], vr, p, f"{attack.label} train vs {spec['source']}")
                te_adv, te_stats = self.generate(src_model, attack, ctx.x_test[test_idx], s.test.y[test_idx], vr, p,
                                                 f"{attack.label} test vs {spec['source']}")
                a = {"source": idx, "train": tr_adv, "test": te_adv, "test_index": test_idx,
                     "within_budget": np.float64(te_stats["within_budget"]), "linf_median_found": np.float64(te_stats["linf_median_found"])}
                save_arrays(path, **a)
        train = s.train.take(a["source"])
        train = Beats(a["train"], train.y, train.groups, np.ones(len(train), dtype=bool))
        static = {"key": key, "source": a["source"], "train": train, "test": a["test"], "test_index": a["test_index"],
                  "source_model": spec["source"],
                  "stats": {"within_budget": float(a["within_budget"]), "linf_median_found": float(a["linf_median_found"])}}
        self._static = (key, static)
        return static

    # -- attacks ----------------------------------------------------------------------------------
    def generate(self, model: torch.nn.Module, attack: Attack, x: torch.Tensor, y: np.ndarray,
                 value_range: tuple[float, float], p: Profile, desc: str) -> tuple[np.ndarray, dict]:
        """Attack beats in batches; minimisation attacks' results beyond eps are replaced by the clean beat.

        The stats hold, for a minimisation attack, each beat's L-inf when its raw result fools the
        model (None where it does not), so a report can judge it at any eps from this one run.
        """
        model.eval()
        np.random.seed(p.seed)  # ART draws random starts from numpy's global generator
        torch.manual_seed(p.seed)
        outs, linfs = [], []
        batch = p.attack_batch
        for i in log.bar(range(0, len(x), batch), desc=desc):
            xb = x[i:i + batch].to(self.device)
            yb = torch.as_tensor(y[i:i + batch], device=self.device)
            adv = attack(model, xb, yb, value_range)
            linf = check_adversarial(adv, xb, attack.label, attack.eps, _bounded(attack), value_range)
            outs.append(adv.detach().float().cpu())
            linfs.append(linf.cpu())
        self.attack_calls += 1
        x_adv, linf = torch.cat(outs), torch.cat(linfs)
        within = linf <= attack.eps + TOL
        stats: dict[str, Any] = {"within_budget": float(within.float().mean()), "linf_median_found": float(linf.median())}
        if not _bounded(attack):
            fooled = predict(model, x_adv, self.device).argmax(1) != y
            stats["linf_found"] = [round(float(v), 6) if f else None for v, f in zip(linf.tolist(), fooled)]
            x_adv = torch.where(within[:, None, None], x_adv, x.cpu())
        return x_adv[:, 0].numpy(), stats

    # -- cells ------------------------------------------------------------------------------------
    def cell(self, spec: dict, error: str | None = None) -> dict:
        """Attack and score one cell, write its file atomically, and return its record (failed cells too)."""
        cell = Cell(**spec["cell"])
        record: dict[str, Any] = {"cell": asdict(cell), "key": spec["cell_key"]}
        import time

        t0 = time.perf_counter()
        try:
            if error is not None:
                raise _Known(error)
            record.update(self.evaluate(cell), status="ok")
        except KeyboardInterrupt:
            raise
        except _Known as exc:
            record.update(status="failed", error=str(exc))
        except Exception as exc:  # noqa: BLE001 - one failed cell must not stop the run
            record.update(status="failed", error=one_line(exc, cell, self.reg), traceback=traceback.format_exc())
        record["seconds"] = time.perf_counter() - t0
        write_json(Path(spec["path"]), record)
        return record

    def evaluate(self, cell: Cell) -> dict:
        ctx, p = self.keys.data(cell.dataset, cell.seed), self.keys.profile(cell.seed)
        ds, s = ctx.dataset, ctx.splits
        attack = build_attack(cell.attack, p, self.reg, cell.eps) if cell.attack else None
        static_spec = None
        if attack is not None and trains_on_static(self.cfg, cell):
            src = self.keys.train_spec(cell.dataset, self.cfg.source_model, None, cell.seed)
            static_spec = self.keys.static_spec(cell.dataset, cell.attack, cell.seed, src["key"])
        net, info, key = self.trained(self.keys.train_spec(cell.dataset, cell.model, static_spec["key"] if static_spec else None,
                                                           cell.seed, attack=cell.attack))
        sub = eval_index(s.test.y, attack, p)
        idx = np.arange(len(s.test)) if sub is None else sub
        x_clean, y = s.test.x[idx], s.test.y[idx]
        clean_logits = self._logits(net, x_clean, cell.model, len(ds.classes))
        clean_pred = clean_logits.argmax(1)
        result: dict[str, Any] = {"train": info, "checkpoint": key, "classes": list(ds.classes),
                                  "trained_on": f"clean + {cell.attack} static set" if static_spec else "clean"}
        if sub is not None:
            result["eval_index"] = sub.tolist()
        if cell.mode == "clean":
            x_eval = x_clean
        elif cell.mode == "static":
            static = self.static(static_spec)
            x_eval = static["test"]
            result["static_source"] = static["source_model"]
            result["budget"] = static["stats"]
        else:
            target = DetectorAware(net) if cell.mode == "adaptive-detect" else net
            x_eval, budget = self.generate(target, attack, ctx.x_test[idx], y, ds.value_range, p, f"{attack.label} vs {cell.model}")
            if "linf_found" in budget:
                result["linf_found"] = budget.pop("linf_found")
            result["budget"] = budget
        pred = self._logits(net, x_eval, cell.model, len(ds.classes)).argmax(1)
        result["metrics"] = metrics.classification(y, pred, ds.classes)
        result["clean_accuracy"] = float((clean_pred == y).mean())
        robust = pred == y
        if cell.mode == "adaptive-detect":  # the system's answer: right, or flagged as attacked
            robust |= _batched(net.detect, x_eval, self.device).argmax(1) == 1
            result["system_accuracy"] = float(robust.mean())
        result["correct"] = "".join("1" if c else "0" for c in robust)
        result["y"] = "".join(str(int(c)) for c in y)  # each scored beat's class, aligned with `correct`
        if attack is not None:
            result["attack"] = attack.config()
            result["attack_kind"] = getattr(attack, "kind", "gradient")
            result["success_rate"] = metrics.success_rate(y, clean_pred, pred)
            result["perturbation"] = metrics.perturbation(x_clean, x_eval)
        result.update(self._extras(net, x_clean, x_eval, y, attack is not None, p))
        result["examples"] = _examples(x_clean, x_eval, y, len(ds.classes))
        return result

    def _logits(self, net: torch.nn.Module, x: np.ndarray, name: str, n_classes: int) -> np.ndarray:
        logits = predict(net, x, self.device)
        check_logits(logits, name, len(x), n_classes)
        return logits

    def _extras(self, net: torch.nn.Module, x_clean: np.ndarray, x_eval: np.ndarray, y: np.ndarray, attacked: bool,
                p: Profile) -> dict:
        """Attack detection (a model with `detect`) and generator similarity (a model with `generate`; paper Table 3)."""
        out: dict[str, Any] = {}
        if hasattr(net, "detect"):
            flag_eval = _batched(net.detect, x_eval, self.device).argmax(1)
            flag_clean = _batched(net.detect, x_clean, self.device).argmax(1)
            out["detection"] = {"flagged_eval": float(flag_eval.mean()), "flagged_clean": float(flag_clean.mean())}
            if attacked:
                moved = np.abs(x_eval - x_clean).max(1) > 0
                out["detection"]["accuracy"] = float(np.concatenate([flag_eval[moved] == 1, flag_clean == 0]).mean())
        if hasattr(net, "generate") and hasattr(sys.modules.get(type(net).__module__), "similarity"):
            similarity = sys.modules[type(net).__module__].similarity
            torch.manual_seed(p.seed)  # G's noise z
            with torch.no_grad():
                g = torch.cat([net.generate(torch.as_tensor(x_eval[i:i + 2048], device=self.device)[:, None],
                                            torch.as_tensor(y[i:i + 2048], device=self.device)) for i in range(0, len(y), 2048)])
            out["similarity"] = similarity(g[:, 0].float().cpu().numpy(), x_clean)
        return out


def _read_checkpoint(path: Path) -> tuple[dict, dict] | None:
    """A verified checkpoint entry as (state_dict, info); loaded with `weights_only=True`."""
    found = load_entry(path)
    if found is None:
        return None
    try:
        state = torch.load(io.BytesIO(found[0]), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a checkpoint that passed its checksum but does not load
        raise Damaged(path, f"not a loadable state_dict ({type(exc).__name__})") from exc
    return state, found[1]["info"]


class _Known(Exception):
    """A failure already put in one line (a plugin that did not load, a task this one needed that failed)."""


def read_done(path: Path, key: str, retry_failed: bool) -> dict | None:
    """The cell file at `path` if it holds this key's answer (and is ok, with `retry_failed`); a damaged one is deleted."""
    if not path.exists():
        return None
    try:
        old = read_cell(path)
    except Damaged as exc:
        warn_damaged(exc)
        path.unlink(missing_ok=True)
        return None
    if old.get("key") != key or (retry_failed and old.get("status") != "ok"):
        return None
    return old


def _fit_extras(p: Profile) -> dict:
    patience = getattr(p, "patience", None)
    if patience is None:
        return {}
    if "patience" not in inspect.signature(fit).parameters:
        raise ValueError(f"profile {p.name!r} sets patience, which this ecgbench's training harness does not take")
    return {"patience": patience}


def _bounded(attack: Attack) -> bool:
    return bool(getattr(attack, "bounded", True))


@torch.no_grad()
def _batched(fn: Any, x: np.ndarray, device: torch.device, batch: int = 2048) -> np.ndarray:
    t = torch.as_tensor(x, dtype=torch.float32)[:, None]
    return torch.cat([fn(t[i:i + batch].to(device)).float().cpu() for i in range(0, len(t), batch)]).numpy()


def _examples(x: np.ndarray, x_adv: np.ndarray, y: np.ndarray, n_classes: int) -> dict:
    """The first test beat of each class, clean and as evaluated, for the overlay figure (paper Fig. 3)."""
    idx = [int(np.flatnonzero(y == c)[0]) for c in range(n_classes) if (y == c).any()]
    return {"index": idx, "y": [int(y[i]) for i in idx],
            "clean": np.round(x[idx], 5).tolist(), "evaluated": np.round(x_adv[idx], 5).tolist()}


def one_line(exc: BaseException, cell: Cell, reg: Registry) -> str:
    """The error in one line, naming the plugin at fault and its distribution."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (RegistryError, _Known)):
        return msg
    for kind, name in (("models", cell.model), ("attacks", parse_attack(cell.attack)[0] if cell.attack else None), ("datasets", cell.dataset)):
        if name is None:
            continue
        try:
            entry = reg.entry(kind, name)
        except RegistryError:
            continue
        if isinstance(exc, PluginError) and msg.startswith((f"{kind[:-1]} '{name}'", f"{kind[:-1]} {name!r}")):
            return f"{msg} (from {entry.dist} {entry.version})"
        if not isinstance(exc, PluginError) and _raised_in(exc, entry.value.split(":")[0]):
            return f"{kind[:-1]} plugin {name!r} from {entry.dist} {entry.version} raised {type(exc).__name__}: {msg}"
    return msg if isinstance(exc, PluginError) else f"{type(exc).__name__}: {msg}"


def _raised_in(exc: BaseException, module: str) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").startswith(module):
            return True
        tb = tb.tb_next
    return False


def summary(cell: Cell, record: dict) -> str:
    if record["status"] != "ok":
        return f"FAILED {cell.label}: {record['error']}"
    acc = record.get("system_accuracy", record["metrics"]["accuracy"]) * 100
    what = "clean accuracy" if cell.mode == "clean" else f"robust accuracy after {cell.attack} ({cell.mode}{'' if cell.eps is None else f', eps {cell.eps:g}'})"
    seed = f" seed {cell.seed}" if cell.seed else ""
    return f"{cell.dataset} {cell.model}{seed}: {what}: {acc:.1f}% ({record['seconds']:.1f} s)"
