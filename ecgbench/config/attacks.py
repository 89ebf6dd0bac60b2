"""Attack specs: `pgd`, `pgd@foolbox`, `hsj@art:paper-reference`, parsed and built in this one place.

A spec names a registered attack, optionally a back-end and a variant; the profile may override
parameters that the variant does not fix, and an adaptive robustness curve sets `eps`.
"""
from __future__ import annotations

from ecgbench.config.profiles import Profile
from ecgbench.contracts.base import Attack
from ecgbench.contracts.registry import Registry, parse_attack

__all__ = ["build_attack"]


def build_attack(spec: str, profile: Profile, reg: Registry, eps: float | None = None) -> Attack:
    """The attack for a spec, with the profile's overrides for parameters the variant does not fix, at `eps` if given."""
    name, backend, variant = parse_attack(spec)
    cls = reg.get("attacks", name)
    fixed = cls.variants.get(variant, {}) if variant else {}
    wanted = dict(profile.attack_params.get(name, {}))
    unknown = sorted(set(wanted) - set(cls.defaults))
    if unknown:
        raise ValueError(f"profile {profile.name!r} sets {', '.join(unknown)} for attack {name!r}, which takes {', '.join(cls.defaults)}")
    if eps is not None:
        wanted["eps"] = eps
    overrides = {k: v for k, v in wanted.items() if k not in fixed}
    return cls(backend=backend, variant=variant, **overrides)
