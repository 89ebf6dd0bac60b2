"""Run profiles: how much data, how many epochs, how hard the attacks try.

The built-in profiles are TOML files shipped in the package (`ecgbench/profile_files/*.toml`); each
states every field, with comments that cite the paper where it gives the number. `paper` follows
ECG-ATK-GAN paper 3.1-3.2 (all beats, SMOTE to 10,000, 5-fold CV, batch 128, 100 epochs) and is
meant for a GPU; `standard` is the paper's data on the natural test set with early stopping
(issue 11); `quick` is a CPU run of minutes on real data; `smoke` takes seconds on a few records,
for tests. A user's own file (`--profile my.toml`) may start from another with `base = "quick"`
and set only what differs. TOML has no null: an optional field is switched off with the string
"none" (`train_cap = "none"`: every beat). `defence_params` states what a defended model
(`kachuee+pgd-at`) trains with; the built-in files state the defences' defaults.
"""
from __future__ import annotations

import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["Profile", "PROFILES", "get_profile", "list_profiles", "builtin_names", "check_fields", "check_defence_params",
           "defence_overrides", "describe_profiles"]

FILES = "profile_files"  # package folder of the built-in profiles (profiles.py holds this module)
NONE = "none"  # how a TOML file says None
ORDER = ("smoke", "quick", "standard", "paper")  # smallest first, in listings
OMIT_WHEN_NONE = ("patience", "costly_test_cap", "costly_attack_batch")  # fields added after results were cached: see Profile.as_dict
OMIT_WHEN_EMPTY = ("defence_params",)  # likewise while empty; as_dict keeps only its values that are not the defaults


@dataclass(frozen=True)
class Profile:
    name: str
    epochs: int = field(metadata={"help": "at most this many epochs (paper 3.2: 100); with patience, training may stop sooner"})
    patience: int | None = field(default=None, metadata={"help": "early stopping: epochs without a better validation score; none: every epoch"})
    subset: bool = field(default=False, metadata={"help": "read only the dataset's few smoke records (tests)"})
    train_cap: int | None = field(default=None, metadata={"help": "real training beats per class, before oversampling; none: all"})
    test_cap: int | None = field(default=None, metadata={"help": "test beats per class; none: the natural test set"})
    costly_test_cap: int | None = field(default=None, metadata={
        "help": "costly attacks (APGD, Boundary, HSJ, Square, ART's CW) run on a fixed stratified subset of this many test beats"})
    smote_target: int = field(default=10_000, metadata={"help": "oversample each minority class to this many beats (paper 3.1: 10,000)"})
    folds: int = field(default=1, metadata={"help": "cross-validation folds (paper 3.1: 5); 1: one holdout split"})
    val_fraction: float = field(default=0.1, metadata={"help": "validation share of the training beats when folds = 1 (our choice)"})
    batch_size: int = field(default=128, metadata={"help": "training batch (paper 3.2: 128)"})
    attack_batch: int = field(default=1024, metadata={"help": "beats attacked at once (speed only)"})
    costly_attack_batch: int | None = field(default=None, metadata={
        "help": "costly attacks' beats at once: each batch's result is saved, so a run stopped by --time-limit loses at most "
                "one batch of an attack that takes hours; none: attack_batch"})
    static_train_cap: int | None = field(default=None, metadata={
        "help": "static mode: attacked copies of at most this many training beats; none: all"})
    attack_params: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={
        "help": "per-attack parameter overrides (query budgets, iterations)"})
    defence_params: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={
        "help": "per-defence parameters defended models (kachuee+pgd-at) train with (eps, steps, beta)"})
    seed: int = field(default=0, metadata={"help": "seed of splits, caps, weights and attacks (--seed overrides it)"})

    def with_seed(self, seed: int) -> "Profile":
        """The profile with `seed`: every key hashes the profile, so each seed has its own cache entries."""
        return self if self.seed == seed else replace(self, seed=seed)

    def attack_batch_for(self, attack: Any) -> int:
        """Beats a call of `attack` gets: `costly_attack_batch` for a costly one (if set), else `attack_batch`."""
        if getattr(attack, "costly", False) and self.costly_attack_batch:
            return self.costly_attack_batch
        return self.attack_batch

    def as_dict(self) -> dict[str, Any]:
        """Every field, except the later-added ones while they hold None, or no value but a default.

        The dict is hashed into cache keys and written to run.json: leaving out `patience` and
        `costly_test_cap` (and `costly_attack_batch`) at their default keeps the keys of runs made before they existed, and so does
        leaving out `defence_params` but for the values that differ from the defences' defaults (what
        changes a training; the built-in files state the defaults).
        """
        d = asdict(self)
        d["defence_params"] = defence_overrides(self.defence_params)  # the values that change a training
        for key in OMIT_WHEN_NONE:
            if d[key] is None:
                del d[key]
        for key in OMIT_WHEN_EMPTY:
            if not d[key]:
                del d[key]
        return d


def defence_overrides(params: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The values of `params` (defence -> parameters) that differ from the registered defence's defaults.

    A defence that is not registered trains nothing here and is left out (the built-in files name the
    built-in defences, which ECGBENCH_PLUGINS may leave out); one that fails to load keeps all its values.
    """
    if not params:
        return {}
    from ecgbench.contracts.registry import RegistryError, registry

    known, out = registry.names("defences"), {}
    for name, values in params.items():
        if name not in known:
            continue
        try:
            defaults = registry.get("defences", name).defaults
        except RegistryError:
            defaults = {}
        changed = {k: v for k, v in values.items() if k not in defaults or defaults[k] != v}
        if changed:
            out[name] = changed
    return out


def _fields() -> dict[str, Any]:
    """Field name -> resolved type, for every field a file may set (all but `name`)."""
    hints = typing.get_type_hints(Profile)
    return {f.name: hints[f.name] for f in fields(Profile) if f.name != "name"}


def _optional(hint: Any) -> tuple[Any, bool]:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return hint, False


def _describe(hint: Any) -> str:
    inner, optional = _optional(hint)
    name = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(inner, "a table of tables")
    return f"{name} or \"{NONE}\"" if optional else name


def _convert(source: str, key: str, value: Any, hint: Any) -> Any:
    """The value as the field's type, or a one-line ValueError naming source, key, expected type and value."""
    inner, optional = _optional(hint)
    if optional and value == NONE:
        return None
    ok = {
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        bool: isinstance(value, bool),
        str: isinstance(value, str),
    }.get(inner)
    if ok is None:  # attack_params, defence_params: {plugin: {parameter: value}}
        ok = isinstance(value, dict) and all(isinstance(v, dict) for v in value.values())
    if not ok:
        raise ValueError(f"{source}: profile key {key!r} must be {_describe(hint)}, got {value!r}")
    value = float(value) if inner is float else value
    low = {"val_fraction": None, "seed": 0}.get(key, 1)
    if key == "val_fraction" and not 0 < value < 1:
        raise ValueError(f"{source}: profile key 'val_fraction' must lie strictly between 0 and 1, got {value!r}")
    if inner is int and low is not None and value < low:
        raise ValueError(f"{source}: profile key {key!r} must be at least {low}, got {value!r}")
    return value


def check_fields(source: str, table: dict[str, Any], extra: tuple[str, ...] = (), user: bool = True) -> dict[str, Any]:
    """Profile field overrides checked against the fields that exist and their types, converted ("none" -> None).

    `extra` names keys the caller handles itself (a file's `base`); `user`: also check that each attack
    `attack_params` names is registered, and each defence `defence_params` names with the parameters it
    takes (not for the built-in files, which name every built-in plugin even where ECGBENCH_PLUGINS
    leaves some out; tests/test_profiles.py checks them). Errors are one line naming `source`.
    """
    known = _fields()
    out = {}
    for key, value in table.items():
        if key in extra:
            continue
        if key not in known:
            raise ValueError(f"{source}: unknown profile key {key!r}; keys: {', '.join(sorted([*known, *extra]))}")
        out[key] = _convert(source, key, value, known[key])
    if user:
        _check_attack_names(source, out.get("attack_params", {}))
        check_defence_params(source, out.get("defence_params", {}))
    return out


def _check_attack_names(source: str, params: dict[str, Any]) -> None:
    """Each attack a user's `attack_params` names must be registered (a misspelled one would be ignored)."""
    if not params:
        return
    from ecgbench.contracts.registry import registry

    known = registry.names("attacks")
    for name in params:
        if name not in known:
            raise ValueError(f"{source}: attack_params names attack {name!r}, which is not registered; registered: {', '.join(known)}")


def check_defence_params(source: str, params: dict[str, dict[str, Any]]) -> None:
    """Each defence `params` names must be registered and take the parameters set (a misspelling would be ignored)."""
    if not params:
        return
    from ecgbench.contracts.registry import RegistryError, registry

    known = registry.names("defences")
    for name, values in params.items():
        if name not in known:
            raise ValueError(f"{source}: defence_params names defence {name!r}, which is not registered; "
                             f"registered: {', '.join(known) or '(none)'}")
        try:
            takes = registry.get("defences", name).defaults
        except RegistryError as exc:
            raise ValueError(f"{source}: defence_params names defence {name!r}: {exc}") from exc
        unknown = sorted(set(values) - set(takes))
        if unknown:
            raise ValueError(f"{source}: defence_params sets {', '.join(unknown)} for defence {name!r}, "
                             f"which takes {', '.join(takes)}")


def builtin_names() -> list[str]:
    """Names of the profiles shipped in the package, from their file names."""
    names = [p.name[:-5] for p in resources.files("ecgbench.config").joinpath(FILES).iterdir() if p.name.endswith(".toml")]
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def _read(source: str, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{source}: not valid TOML: {exc}") from exc


def _load(name_or_path: str | Path, seen: tuple[str, ...] = ()) -> Profile:
    """A built-in profile by name, or a profile file by path, with its `base` chain resolved."""
    spec = str(name_or_path)
    if spec in builtin_names():
        source, text, folder = f"{spec}.toml", resources.files("ecgbench.config").joinpath(FILES, f"{spec}.toml").read_text(), None
        name = spec
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            hint = "no such file" if path.suffix == ".toml" or len(path.parts) > 1 else "not a built-in profile"
            raise ValueError(f"unknown profile {spec!r} ({hint}); choose one of {', '.join(builtin_names())} or give a path to a .toml file")
        source, text, folder, name = str(path), path.read_text(), path.resolve().parent, path.stem
    if source in seen:
        raise ValueError(f"{source}: profile bases form a loop: {' -> '.join([*seen, source])}")
    table = _read(source, text)
    values = check_fields(source, table, extra=("base",), user=folder is not None)
    base = table.get("base")
    if base is None:
        if "epochs" not in values:
            raise ValueError(f"{source}: a profile needs 'epochs' or a 'base' profile to start from")
        return Profile(name, **values)
    if not isinstance(base, str):
        raise ValueError(f"{source}: profile key 'base' must be a profile name or a path, got {base!r}")
    if folder is not None and base not in builtin_names() and not Path(base).is_absolute():
        base = str(folder / base)  # a base file is found next to the file that names it
    return replace(_load(base, (*seen, source)), name=name, **values)


def get_profile(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> Profile:
    """A built-in profile by name (`quick`) or a user's TOML file by path, with field overrides applied.

    Overrides that change a value rename the profile `<name>+<keys>` (`quick+epochs`), so no table
    calls a changed profile by a built-in's name; the full values go to run.json either way.
    """
    profile = _load(name_or_path)
    if not overrides:
        return profile
    values = check_fields("profile overrides", overrides)
    changed = sorted(k for k, v in values.items() if getattr(profile, k) != v)
    if not changed:
        return profile
    return replace(profile, name=f"{profile.name}+{','.join(changed)}", **values)


def list_profiles() -> list[Profile]:
    """The built-in profiles."""
    return [_load(name) for name in builtin_names()]


def describe_profiles(profiles: list[Profile] | None = None) -> str:
    """A table of profiles (columns) and their fields (rows), for `ecgbench profiles`."""
    from tabulate import tabulate

    profiles = list_profiles() if profiles is None else profiles
    rows = []
    helps = {f.name: f.metadata.get("help", "") for f in fields(Profile)}
    for key in ["name", *_fields()]:
        cells = []
        for p in profiles:
            value = getattr(p, key)
            if key in ("attack_params", "defence_params"):
                value = "\n".join(f"{a}: {', '.join(f'{k}={v}' for k, v in ps.items())}" for a, ps in value.items()) or "(defaults)"
            cells.append(NONE if value is None else value)
        rows.append([key, *cells, helps.get(key, "") if key != "name" else "meaning"])
    return tabulate(rows[1:], headers=rows[0], tablefmt="simple", disable_numparse=True)


PROFILES: dict[str, Profile] = {p.name: p for p in list_profiles()}
