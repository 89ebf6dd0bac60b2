"""ECG threat models: perturbations shaped like what corrupts a real ECG, optimised against the model.

An L-inf ball of white noise is not how ECGs are corrupted: real interference is baseline wander, powerline
hum and muscle noise. These attacks keep the L-inf bound `eps` on the beat scale (so each is a subset of
PGD's ball and joins the white-box worst case), but give the perturbation the shape of that interference.
(Smooth adversarial perturbations, Han et al. 2020, are the attack `sap` of the example plugin package,
plugins/examples/ecgbench-example, which .ci/run installs.)

- `baseline-wander`: the sum of two sinusoids of 0.05-0.5 Hz (respiration, electrode motion; the band of
  physionet's NSTDB "bw" record), amplitudes, frequencies and phases optimised.
- `powerline`: mains hum at `mains` Hz (60: MIT-BIH was recorded in the US) and its 2nd and 3rd harmonics,
  amplitudes and phases optimised.
- `emg`: muscle noise, band-limited to 20-150 Hz (a free signal filtered in the Fourier domain), optimised.

The three interference models are bounded by rescaling each beat's perturbation to L-inf eps at most, and
optimised with Adam on the cross-entropy for `steps` steps, each beat keeping the perturbation of its highest
loss (our choices: two wander components, three harmonics, 50 steps, Adam lr 0.1, one seeded start). Their
variant `random` draws the same parameters at random at the full amplitude eps, without optimising: a
corruption benchmark, so a reader sees the gap between random and worst-case interference. `rate` is the
beats' sampling rate in Hz (every registered dataset: 360).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ecgbench.contracts import Attack

from .seeding import seeded

__all__ = ["BaselineWander", "Powerline", "EMG"]

def _clip(x: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    return x.clamp(float(value_range[0]), float(value_range[1]))


class _Interference(Attack):
    """A parametric interference `shape(params, t)`, bounded to L-inf eps, optimised (or, variant `random`, drawn)."""

    backends = ("torch",)
    kind = "gradient"
    costly = False
    defaults = {"eps": 0.01, "steps": 50, "lr": 0.1, "rate": 360, "seed": 0}
    variants = {"random": {"steps": 0}}
    per_beat = True  # the rescaling takes one bound per beat as well as one for all

    def __init__(self, backend: str | None = None, variant: str | None = None, **params) -> None:
        super().__init__(backend, variant, **params)
        if self.params["steps"] == 0:
            self.kind = "corruption"  # drawn, not optimised: neither white- nor black-box, yet within eps

    def init(self, n: int, window: int, device: torch.device) -> list[torch.Tensor]:
        raise NotImplementedError

    def shape(self, params: list[torch.Tensor], t: torch.Tensor) -> torch.Tensor:
        """The unbounded perturbation [n, window] at times `t` (seconds)."""
        raise NotImplementedError

    def bounded(self, params: list[torch.Tensor], t: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
        """The perturbation [n, 1, window], rescaled per beat to L-inf eps (exactly eps for a random draw);
        `eps` is one bound or one per beat ([n, 1])."""
        d = self.shape(params, t)
        peak = d.abs().amax(1, keepdim=True).clamp_min(1e-12)
        scale = eps / peak if self.params["steps"] == 0 else torch.clamp(eps / peak, max=1.0)
        return (d * scale)[:, None]

    def run_torch(self, model, x, y, value_range, eps=None):
        n, window = x.shape[0], x.shape[-1]
        bound = self.eps if eps is None else eps.to(x.dtype)[:, None]
        t = torch.arange(window, device=x.device, dtype=x.dtype) / float(self.params["rate"])
        with seeded(int(self.params["seed"]), x.device):
            params = [p.to(x.dtype) for p in self.init(n, window, x.device)]
        best = self.bounded(params, t, bound).detach()
        if self.params["steps"] == 0:
            return _clip(x + best, value_range)
        best_loss = torch.full((n,), -math.inf, device=x.device)
        params = [p.requires_grad_(True) for p in params]
        opt = torch.optim.Adam(params, lr=float(self.params["lr"]), maximize=True)
        with torch.enable_grad():
            for _ in range(int(self.params["steps"]) + 1):
                delta = self.bounded(params, t, bound)
                loss = F.cross_entropy(model(_clip(x + delta, value_range)), y, reduction="none")
                better = loss.detach() > best_loss
                best[better], best_loss[better] = delta.detach()[better], loss.detach()[better]
                opt.zero_grad()
                loss.sum().backward()
                opt.step()
        return _clip(x + best, value_range)


class BaselineWander(_Interference):
    """Baseline wander: two sinusoids of 0.05-0.5 Hz, amplitude, frequency and phase optimised."""

    name = "baseline-wander"
    band = (0.05, 0.5)

    def init(self, n, window, device):
        return [torch.randn(n, 2, device=device), torch.randn(n, 2, device=device),
                torch.rand(n, 2, device=device) * 2 * math.pi]  # amplitude, frequency (logit of the band), phase

    def shape(self, params, t):
        amp, f, phase = params
        lo, hi = self.band
        freq = lo + (hi - lo) * torch.sigmoid(f)
        return (amp[..., None] * torch.sin(2 * math.pi * freq[..., None] * t + phase[..., None])).sum(1)


class Powerline(_Interference):
    """Powerline hum: `mains` Hz and its 2nd and 3rd harmonics, amplitudes and phases optimised."""

    name = "powerline"
    defaults = {**_Interference.defaults, "mains": 60}
    variants = {"random": {"steps": 0}, "50hz": {"mains": 50}, "50hz-random": {"mains": 50, "steps": 0}}

    def init(self, n, window, device):
        return [torch.randn(n, 3, device=device), torch.rand(n, 3, device=device) * 2 * math.pi]

    def shape(self, params, t):
        amp, phase = params
        freq = float(self.params["mains"]) * torch.arange(1, 4, device=t.device, dtype=t.dtype)
        return (amp[..., None] * torch.sin(2 * math.pi * freq[None, :, None] * t + phase[..., None])).sum(1)


class EMG(_Interference):
    """Muscle (EMG) noise: a free signal band-limited to 20-150 Hz in the Fourier domain, optimised."""

    name = "emg"
    band = (20.0, 150.0)

    def init(self, n, window, device):
        return [torch.randn(n, window, device=device)]

    def shape(self, params, t):
        (free,) = params
        freqs = torch.fft.rfftfreq(free.shape[-1], d=float(t[1] - t[0])).to(free.device)
        mask = ((freqs >= self.band[0]) & (freqs <= self.band[1])).to(free.dtype)
        return torch.fft.irfft(torch.fft.rfft(free) * mask, n=free.shape[-1])
