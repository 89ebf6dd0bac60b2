"""The benchmark run: datasets x models x attacks x modes, one small JSON file per cell.

Modes (see README, "Protocols"):
- `clean`: the model trained on clean beats, scored on clean test beats (the paper's "No Attack").
- `static` (paper 3.1): attacked copies of training and test beats are made once against a source
  model (the paper: ECG-ATK-GAN's discriminator), cached; each model is trained on clean + attacked
  training beats and scored on the attacked test beats. Tables 1 and 2 of the paper.
- `adaptive`: that same trained model attacked white-box directly on the clean test beats.
- `adaptive-detect`: for a model with an attack detector (`detect`), the attack must fool the
  classifier and keep the detector saying "clean"; a beat counts as robust if it is classified
  correctly or flagged (Carlini & Wagner 2017, "Adversarial examples are not easily detected").

Cells are written atomically and skipped when rerun with the same settings, so a killed run resumes.
"""
from __future__ import annotations

import inspect
import platform
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ecgbench import metrics
from ecgbench.api import Attack, Beats, PluginError
from ecgbench.contracts import TOL, check_adversarial, check_beats, check_logits
from ecgbench.data import Splits, load_beats, prepare
from ecgbench.profiles import Profile
from ecgbench.registry import Registry, RegistryError, registry as default_registry
from ecgbench.store import atomic_write, cache_key, load_arrays, read_json, save_arrays, write_json
from ecgbench.train import fit, predict

__all__ = ["Cell", "RunConfig", "Runner", "parse_attack", "build_attack", "plan", "MODES"]

MODES = ("static", "adaptive", "adaptive-detect")


@dataclass(frozen=True)
class Cell:
    dataset: str
    model: str
    attack: str | None  # attack spec (`pgd`, `pgd@foolbox`); None for the clean cell
    mode: str  # clean | static | adaptive

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.model}/{self.attack or 'none'}/{self.mode}"

    def path(self, out: Path) -> Path:
        attack = (self.attack or "none").replace(":", "+")
        return out / "cells" / self.dataset / self.model / f"{attack}.{self.mode}.json"


@dataclass
class RunConfig:
    datasets: list[str]
    models: list[str]
    attacks: list[str]
    profile: Profile
    out: Path
    data_dir: Path
    cache: Path
    split: str = "random"
    modes: tuple[str, ...] = MODES
    source: str | None = None  # model the static attacks target; default ecg-atk-gan (paper 2.3)
    device: str = "auto"
    force: bool = False
    retry_failed: bool = False
    progress: bool = True
    command: str = ""


def parse_attack(spec: str) -> tuple[str, str | None, str | None]:
    """`pgd@foolbox:variant` -> (`pgd`, `foolbox`, `variant`)."""
    head, _, variant = spec.partition(":")
    name, _, backend = head.partition("@")
    return name, backend or None, variant or None


def build_attack(spec: str, profile: Profile, reg: Registry) -> Attack:
    """The attack for a spec, with the profile's overrides for parameters the variant does not fix."""
    name, backend, variant = parse_attack(spec)
    cls = reg.get("attacks", name)
    fixed = cls.variants.get(variant, {}) if variant else {}
    wanted = profile.attack_params.get(name, {})
    unknown = sorted(set(wanted) - set(cls.defaults))
    if unknown:
        raise ValueError(f"profile {profile.name!r} sets {', '.join(unknown)} for attack {name!r}, which takes {', '.join(cls.defaults)}")
    overrides = {k: v for k, v in wanted.items() if k not in fixed}
    return cls(backend=backend, variant=variant, **overrides)


def plan(cfg: RunConfig, reg: Registry) -> list[Cell]:
    """Clean cells first, then attack x mode x model; `adaptive-detect` only for models with a detector."""
    cells = []
    for d in cfg.datasets:
        cells += [Cell(d, m, None, "clean") for m in cfg.models]
        for a in cfg.attacks:
            cells += [Cell(d, m, a, mode) for mode in cfg.modes for m in cfg.models
                      if mode != "adaptive-detect" or _has_detector(reg, m)]
    return cells


def _has_detector(reg: Registry, model: str) -> bool:
    try:
        return hasattr(reg.get("models", model), "detect")
    except RegistryError:
        return False


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


@dataclass
class DataContext:
    dataset: Any
    splits: Splits
    x_test: torch.Tensor
    settings: dict
    notes: list[str] = field(default_factory=list)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available on this machine")
    return torch.device(name)


class Runner:
    """Runs the cells of a plan, reusing cached data, checkpoints and attacked sets."""

    def __init__(self, cfg: RunConfig, reg: Registry | None = None) -> None:
        self.cfg = cfg
        self.reg = reg or default_registry
        self.device = _resolve_device(cfg.device)
        self.profile = cfg.profile
        self._data: dict[str, DataContext] = {}
        self._static: tuple[str, dict] | None = None  # the last attacked set: cells run attack by attack
        self.attack_calls = 0  # attacked sets generated (not served from cache) by this runner
        self.trainings = 0

    # -- data -----------------------------------------------------------------------------------
    def data(self, name: str) -> DataContext:
        if name not in self._data:
            p = self.profile
            cls = self.reg.get("datasets", name)
            records = getattr(cls, "smoke_records", None) if p.subset else None
            dataset = cls(self.cfg.data_dir, records=records)
            beats, seconds, hit = load_beats(dataset, self.cfg.cache)
            check_beats(beats, name, dataset.window, len(dataset.classes), dataset.value_range)
            splits = prepare(dataset, beats, self.cfg.split, seed=p.seed, train_cap=p.train_cap, test_cap=p.test_cap,
                             n_folds=p.folds, val_fraction=p.val_fraction)
            settings = {"dataset": dataset.settings(), "split": self.cfg.split, "profile": _data_profile(p)}
            ctx = DataContext(dataset, splits, torch.as_tensor(splits.test.x)[:, None], settings)
            counts = splits.train.counts(len(dataset.classes))
            for c, n in zip(dataset.classes, counts):
                if n < min(p.train_cap or p.smote_target, p.smote_target):
                    ctx.notes.append(f"{name}: {n} real {c} training beats, fewer than the {min(p.train_cap or p.smote_target, p.smote_target)} asked; using what there is")
            tqdm.write(f"{name}: {len(beats)} beats loaded in {seconds:.2f} s ({'cache' if hit else 'raw records'}); "
                       f"train {counts}, test {splits.test.counts(len(dataset.classes))}")
            for note in ctx.notes:
                tqdm.write(note)
            self._data[name] = ctx
        return self._data[name]

    # -- models ---------------------------------------------------------------------------------
    def _model_key(self, ctx: DataContext, model: str, attack_key: str | None) -> str:
        entry = self.reg.entry("models", model)
        cls = self.reg.get("models", model)
        return cache_key("model", ctx.settings, model, entry.value, entry.version, code_hash(cls),
                         attack_key, self.profile.epochs, self.profile.batch_size, self.profile.smote_target)

    def trained(self, ctx: DataContext, model: str, attack: Attack | None) -> tuple[torch.nn.Module, dict, str]:
        """The model trained on clean beats, or on clean + static attacked beats; cached on disk."""
        cls = self.reg.get("models", model)
        static = self.attacked_static(ctx, attack) if attack is not None else None
        key = self._model_key(ctx, model, static["key"] if static else None)
        path = self.cfg.cache / "checkpoints" / f"{model}-{key}.pt"
        info_path = path.with_suffix(".json")
        net = cls(len(ctx.dataset.classes), ctx.dataset.window)
        if path.exists() and info_path.exists():
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return net.to(self.device).eval(), read_json(info_path), key
        s, p = ctx.splits, self.profile
        result = fit(cls, len(ctx.dataset.classes), ctx.dataset.window, s.train, s.folds,
                     attacked=static["train"] if static else None, attacked_source=static["source"] if static else None,
                     epochs=p.epochs, batch_size=p.batch_size, smote_target=p.smote_target, device=self.device,
                     seed=p.seed, progress=self.cfg.progress)
        self.trainings += 1
        atomic_write(path, lambda fh: torch.save(result.state, fh))
        write_json(info_path, result.info)
        net.load_state_dict(result.state)
        return net.to(self.device).eval(), result.info, key

    # -- attacks --------------------------------------------------------------------------------
    def generate(self, model: torch.nn.Module, attack: Attack, x: torch.Tensor, y: np.ndarray,
                 value_range: tuple[float, float], desc: str) -> tuple[np.ndarray, dict]:
        """Attack beats in batches; minimisation attacks' results beyond eps are replaced by the clean beat."""
        model.eval()
        np.random.seed(self.profile.seed)  # ART draws random starts from numpy's global generator
        torch.manual_seed(self.profile.seed)
        outs, linfs = [], []
        batch = self.profile.attack_batch
        for i in tqdm(range(0, len(x), batch), desc=desc, disable=not self.cfg.progress, leave=False):
            xb = x[i:i + batch].to(self.device)
            yb = torch.as_tensor(y[i:i + batch], device=self.device)
            adv = attack(model, xb, yb, value_range)
            linf = check_adversarial(adv, xb, attack.label, attack.eps, _bounded(attack), value_range)
            outs.append(adv.detach().float().cpu())
            linfs.append(linf.cpu())
        self.attack_calls += 1
        x_adv, linf = torch.cat(outs), torch.cat(linfs)
        within = linf <= attack.eps + TOL
        stats = {"within_budget": float(within.float().mean()), "linf_median_found": float(linf.median())}
        if not _bounded(attack):
            x_adv = torch.where(within[:, None, None], x_adv, x.cpu())
        return x_adv[:, 0].numpy(), stats

    def attacked_static(self, ctx: DataContext, attack: Attack) -> dict:
        """Attacked copies of (a subset of) the training beats and of the test beats, made against the source model.

        Held in memory for the cells that follow: a static cell needs it to train and to score, and the
        adaptive cell of the same attack to find its checkpoint.
        """
        memo = cache_key(ctx.dataset.name, attack.config())
        if self._static is not None and self._static[0] == memo:
            return self._static[1]
        source = self.cfg.source or "ecg-atk-gan"
        src_model, _, src_key = self.trained(ctx, source, None)
        key = cache_key("static", ctx.settings, src_key, attack.config(), code_hash(type(attack)), self.profile.static_train_cap)
        path = self.cfg.cache / "attacked" / f"{attack.name}-{key}.npz"
        s, vr = ctx.splits, ctx.dataset.value_range
        if path.exists():
            a = load_arrays(path)
        else:
            rng = np.random.default_rng(self.profile.seed)
            cap = self.profile.static_train_cap
            idx = np.sort(rng.permutation(len(s.train))[:cap]) if cap else np.arange(len(s.train))
            x_tr = torch.as_tensor(s.train.x[idx])[:, None]
            tr_adv, _ = self.generate(src_model, attack, x_tr, s.train.y[idx], vr, f"{attack.label} train vs {source}")
            te_adv, te_stats = self.generate(src_model, attack, ctx.x_test, s.test.y, vr, f"{attack.label} test vs {source}")
            a = {"source": idx, "train": tr_adv, "test": te_adv,
                 "within_budget": np.float64(te_stats["within_budget"]), "linf_median_found": np.float64(te_stats["linf_median_found"])}
            save_arrays(path, **a)
        train = s.train.take(a["source"])
        train = Beats(a["train"], train.y, train.groups, np.ones(len(train), dtype=bool))
        static = {"key": key, "source": a["source"], "train": train, "test": a["test"], "source_model": source,
                  "stats": {"within_budget": float(a["within_budget"]), "linf_median_found": float(a["linf_median_found"])}}
        self._static = (memo, static)
        return static

    # -- cells ----------------------------------------------------------------------------------
    def cell_key(self, cell: Cell) -> str:
        """Everything that changes a cell's answer; a cell file with another key is stale and recomputed."""
        plugins = [(k, n) for k, n in (("datasets", cell.dataset), ("models", cell.model), ("models", self.cfg.source or "ecg-atk-gan"),
                                       ("attacks", parse_attack(cell.attack)[0] if cell.attack else None)) if n]
        versions = []
        for kind, name in plugins:
            try:
                versions.append((name, self.reg.entry(kind, name).version, code_hash(self.reg.get(kind, name))))
            except RegistryError:
                versions.append((name, "unloadable"))
        return cache_key("cell", asdict(cell), self.cfg.split, self.profile.as_dict(), versions)

    def evaluate(self, cell: Cell) -> dict:
        ctx = self.data(cell.dataset)
        ds, s = ctx.dataset, ctx.splits
        attack = build_attack(cell.attack, self.profile, self.reg) if cell.attack else None
        net, info, key = self.trained(ctx, cell.model, attack if cell.mode != "clean" else None)
        y = s.test.y
        clean_logits = self._logits(net, s.test.x, cell.model, len(ds.classes))
        clean_pred = clean_logits.argmax(1)
        result: dict[str, Any] = {"train": info, "checkpoint": key, "classes": list(ds.classes)}
        if cell.mode == "clean":
            x_eval = s.test.x
        elif cell.mode == "static":
            static = self.attacked_static(ctx, attack)
            x_eval = static["test"]
            result["static_source"] = static["source_model"]
            result["budget"] = static["stats"]
        else:
            target = DetectorAware(net) if cell.mode == "adaptive-detect" else net
            x_eval, result["budget"] = self.generate(target, attack, ctx.x_test, y, ds.value_range, f"{attack.label} vs {cell.model}")
        pred = self._logits(net, x_eval, cell.model, len(ds.classes)).argmax(1)
        result["metrics"] = metrics.classification(y, pred, ds.classes)
        result["clean_accuracy"] = float((clean_pred == y).mean())
        robust = pred == y
        if cell.mode == "adaptive-detect":  # the system's answer: right, or flagged as attacked
            robust |= _batched(net.detect, x_eval, self.device).argmax(1) == 1
            result["system_accuracy"] = float(robust.mean())
        result["correct"] = "".join("1" if c else "0" for c in robust)
        if attack is not None:
            result["attack"] = attack.config()
            result["success_rate"] = metrics.success_rate(y, clean_pred, pred)
            result["perturbation"] = metrics.perturbation(s.test.x, x_eval)
        result.update(self._extras(net, s.test.x, x_eval, y, attack is not None))
        result["examples"] = _examples(s.test.x, x_eval, y, len(ds.classes))
        return result

    def _logits(self, net: torch.nn.Module, x: np.ndarray, name: str, n_classes: int) -> np.ndarray:
        logits = predict(net, x, self.device)
        check_logits(logits, name, len(x), n_classes)
        return logits

    def _extras(self, net: torch.nn.Module, x_clean: np.ndarray, x_eval: np.ndarray, y: np.ndarray, attacked: bool) -> dict:
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
            torch.manual_seed(self.profile.seed)  # G's noise z
            with torch.no_grad():
                g = torch.cat([net.generate(torch.as_tensor(x_eval[i:i + 2048], device=self.device)[:, None],
                                            torch.as_tensor(y[i:i + 2048], device=self.device)) for i in range(0, len(y), 2048)])
            out["similarity"] = similarity(g[:, 0].float().cpu().numpy(), x_clean)
        return out

    def run(self) -> dict:
        cells = plan(self.cfg, self.reg)
        out = self.cfg.out
        started = time.time()
        done = skipped = 0
        failures: list[str] = []
        bar = tqdm(cells, desc="cells", disable=not self.cfg.progress)
        for cell in bar:
            path = cell.path(out)
            key = self.cell_key(cell)
            if path.exists() and not self.cfg.force:
                old = read_json(path)
                if old.get("key") == key and (old.get("status") == "ok" or not self.cfg.retry_failed):
                    skipped += 1
                    if old.get("status") != "ok":
                        failures.append(f"{cell.label}: {old.get('error')}")
                    continue
            t0 = time.perf_counter()
            record: dict[str, Any] = {"cell": asdict(cell), "key": key}
            try:
                record.update(self.evaluate(cell), status="ok")
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - one failed cell must not stop the run
                record.update(status="failed", error=_one_line(exc, cell, self.reg), traceback=traceback.format_exc())
                failures.append(f"{cell.label}: {record['error']}")
            record["seconds"] = time.perf_counter() - t0
            write_json(path, record)
            done += 1
            tqdm.write(_summary(cell, record))
        manifest = self._manifest(started, done, skipped, failures)
        return manifest

    def _manifest(self, started: float, done: int, skipped: int, failures: list[str]) -> dict:
        path = self.cfg.out / "run.json"
        previous = read_json(path) if path.exists() else {}
        wall = time.time() - started
        manifest = {
            "command": self.cfg.command,
            "datasets": self.cfg.datasets, "models": self.cfg.models, "attacks": self.cfg.attacks,
            "modes": list(self.cfg.modes), "split": self.cfg.split, "source": self.cfg.source or "ecg-atk-gan",
            "profile": self.profile.as_dict(),
            "machine": machine(self.device),
            "invocations": previous.get("invocations", []) + [
                {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)), "wall_seconds": wall,
                 "cells_computed": done, "cells_skipped": skipped, "failures": len(failures)}],
            "failures": failures,
        }
        write_json(path, manifest)
        return manifest


def machine(device: torch.device) -> dict:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": __import__("os").cpu_count(), "threads": torch.get_num_threads(), "device": str(device), "gpu": gpu}


def _data_profile(p: Profile) -> dict:
    return {k: getattr(p, k) for k in ("subset", "train_cap", "test_cap", "folds", "val_fraction", "seed")}


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


def _one_line(exc: BaseException, cell: Cell, reg: Registry) -> str:
    """The error in one line, naming the plugin at fault and its distribution."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, RegistryError):
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


def _summary(cell: Cell, record: dict) -> str:
    if record["status"] != "ok":
        return f"FAILED {cell.label}: {record['error']}"
    acc = record.get("system_accuracy", record["metrics"]["accuracy"]) * 100
    what = "clean accuracy" if cell.mode == "clean" else f"robust accuracy after {cell.attack} ({cell.mode})"
    return f"{cell.dataset} {cell.model}: {what}: {acc:.1f}% ({record['seconds']:.1f} s)"
