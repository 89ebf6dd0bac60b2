"""Shaker et al. 2020, "Generalization of convolutional neural networks for ECG classification using GANs" (IEEE Access 8:35592).

Reconstructed from the paper's description; layer sizes ours. We could not obtain its layer tables,
so this is the method, not the published network:
- the paper balances the training set with beats synthesised by DCGANs instead of SMOTE, so
  `oversample = None` and `augment` trains one DCGAN per minority class on that class's real
  training beats and adds synthetic beats (group "dcgan") until every class reaches
  min(largest class, 10,000). The 10,000 is ECG-ATK-GAN paper 3.1's SMOTE target, so both
  balancing schemes aim at the same size;
- one unconditional GAN per class, not one class-conditional GAN: in our trials a conditional GAN
  trained on a CPU budget drew S beats that look like N beats, and the classifier learnt them as
  label noise (N sensitivity fell); a per-class GAN cannot mix classes up;
- ours: DCGAN rules of Radford et al. 2016 (BatchNorm, ReLU in G, LeakyReLU 0.2 in D, strided
  convolutions in D, Adam lr 2e-4, beta1 0.5, non-saturating loss), but G upsamples linearly and
  then convolves instead of transposed convolutions, whose ripple (Odena et al. 2016) set the
  synthetic beats apart from the real ones in our trials;
- ours: `dcgan_steps` updates of batch 64 per class, a fixed CPU budget (three minority classes
  take 10-25 s on a shared two-core CPU, whatever the training-set size); epochs would give a
  class of 30 beats one update each. The budget is the weak point: training on 10k MIT-BIH beats,
  the Shaker CNN reached a validation balanced accuracy of 0.6-0.75 with these beats against
  about 0.8 with SMOTE, and 1,500 steps per class did not close the gap; raise `dcgan_steps`
  where a GPU is at hand;
- synthetic beats are min-max scaled like the real ones (paper 3.1); a class with fewer than two
  real beats gets none (as `ecgbench.data.beats.smote`);
- ours: the classifier is a plain 1D CNN (four Conv-BN-ReLU stages at 32/64/128/128 filters, global
  average pooling, dropout 0.3, FC 64, FC classes) trained with Adam lr 1e-3, the settings we would
  give any CNN of this size; global pooling makes it window-agnostic.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ecgbench.contracts import Beats, Model
from ecgbench.data.beats import minmax

NOISE_DIM = 32


def _up(cin: int, cout: int) -> list[nn.Module]:
    """x2 linear upsampling then a convolution: no transposed-convolution ripple (Odena et al. 2016)."""
    return [nn.Upsample(scale_factor=2, mode="linear"), nn.Conv1d(cin, cout, 5, padding=2), nn.BatchNorm1d(cout), nn.ReLU()]


class DcganGenerator(nn.Module):
    """z -> a beat in [0, 1] of `window` samples, through three x2 upsampling stages."""

    def __init__(self, window: int) -> None:
        super().__init__()
        self.window, self.base = window, math.ceil(window / 8)
        self.project = nn.Sequential(nn.Linear(NOISE_DIM, 32 * self.base), nn.BatchNorm1d(32 * self.base), nn.ReLU())
        self.up = nn.Sequential(*_up(32, 32), *_up(32, 16), *_up(16, 16), nn.Conv1d(16, 1, 7, padding=3), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.project(z).view(len(z), 32, self.base))[..., : self.window]


def dcgan_discriminator(window: int) -> nn.Sequential:
    """Beat -> real/fake logit: three strided convolutions (BatchNorm on all but the first) and a linear layer."""
    return nn.Sequential(
        nn.Conv1d(1, 16, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv1d(16, 32, 4, 2, 1), nn.BatchNorm1d(32), nn.LeakyReLU(0.2),
        nn.Conv1d(32, 64, 4, 2, 1), nn.BatchNorm1d(64), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(64 * (window // 8), 1),  # each k4 s2 p1 convolution halves the length
    )


def train_dcgan(x_real: torch.Tensor, steps: int, batch: int = 64) -> DcganGenerator:
    """Train a DCGAN on one class's real beats [n, 1, window] for `steps` updates of D and G."""
    device, window = x_real.device, x_real.shape[-1]
    g, d = DcganGenerator(window).to(device), dcgan_discriminator(window).to(device)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))  # Radford et al. 2016
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    ones, zeros = torch.ones(batch, 1, device=device), torch.zeros(batch, 1, device=device)
    for _ in range(steps):
        x = x_real[torch.randint(len(x_real), (batch,), device=device)]  # with replacement: classes can be tiny
        fake = g(torch.randn(batch, NOISE_DIM, device=device))
        opt_d.zero_grad(set_to_none=True)
        loss_d = F.binary_cross_entropy_with_logits(d(x), ones) + F.binary_cross_entropy_with_logits(d(fake.detach()), zeros)
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        F.binary_cross_entropy_with_logits(d(fake), ones).backward()  # non-saturating G loss
        opt_g.step()
    return g.eval()


class Shaker(Model):
    """1D CNN trained on real plus DCGAN-synthesised minority beats (reconstructed; layer sizes ours)."""

    lr = 1e-3  # ours: Adam's usual rate for a CNN of this size
    oversample = None  # per-class DCGANs balance the classes instead of SMOTE
    dcgan_steps = 250  # ours, per minority class: a CPU budget (see module docstring)
    augment_cap = 10_000  # ECG-ATK-GAN paper 3.1: minority classes raised to 10,000 beats

    def __init__(self, n_classes: int, window: int) -> None:
        super().__init__(n_classes, window)

        def stage(cin: int, cout: int, k: int, pool: bool) -> list[nn.Module]:
            conv = [nn.Conv1d(cin, cout, k, padding=k // 2), nn.BatchNorm1d(cout), nn.ReLU()]
            return conv + [nn.MaxPool1d(2)] if pool else conv

        self.features = nn.Sequential(
            *stage(1, 32, 7, True), *stage(32, 64, 5, True), *stage(64, 128, 3, True), *stage(128, 128, 3, False)
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def augment(self, train: Beats, seed: int) -> Beats:
        """Real beats, then DCGAN beats raising each class (with >= 2 beats) to min(largest class, augment_cap)."""
        counts = np.bincount(train.y, minlength=self.n_classes)
        target = min(int(counts.max()), self.augment_cap)
        need = {c: target - int(n) for c, n in enumerate(counts) if 2 <= n < target}
        if not need:
            return train
        device = next(self.parameters()).device  # the harness builds the model on its device first
        parts = [train]
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # seeded; the harness's RNG is left alone
            torch.manual_seed(seed)
            for c, n in need.items():
                g = train_dcgan(torch.as_tensor(train.x[train.y == c], device=device)[:, None], self.dcgan_steps)
                with torch.no_grad():
                    x = torch.cat([g(torch.randn(len(b), NOISE_DIM, device=device)) for b in torch.arange(n).split(4096)])
                # min-max scaled like every real beat (paper 3.1), else "max < 1" alone would mark a beat synthetic
                parts.append(Beats(minmax(x[:, 0].cpu().numpy()), np.full(n, c, dtype=np.int64), np.full(n, "dcgan")))
        return Beats.concat(parts)
