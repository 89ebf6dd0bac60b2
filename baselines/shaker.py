"""Shaker et al. 2020, "Generalization of convolutional neural networks for ECG classification using GANs" (IEEE Access 8:35592).

Reconstructed from the paper's description; layer sizes ours. We could not obtain its layer tables,
so this is the method, not the published network:
- the paper balances the training set with beats synthesised by a DCGAN instead of SMOTE, so
  `oversample = None` and `augment` trains a DCGAN on the real training beats and adds synthetic
  beats (group "dcgan") until every class reaches min(largest class, 10,000). The 10,000 is
  ECG-ATK-GAN paper 3.1's SMOTE target, so both balancing schemes aim at the same size;
- ours: one class-conditional DCGAN (label embedding in G, projection discriminator, Miyato &
  Koyama 2018) rather than one GAN per class, trained for `dcgan_epochs` class-balanced epochs so
  it fits a CPU budget; DCGAN rules of Radford et al. 2016 (transposed convolutions, BatchNorm,
  ReLU in G, LeakyReLU 0.2 in D, Adam lr 2e-4, beta1 0.5, non-saturating loss);
- a class with fewer than two real beats gets no synthetic beats (as `ecgbench.data.smote`);
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

from ecgbench.api import Beats, Model
from ecgbench.data import minmax

NOISE_DIM, EMBED_DIM = 32, 16


def up(cin: int, cout: int) -> list[nn.Module]:
    """x2 linear upsampling then a convolution: no checkerboard ripple (Odena et al. 2016) for the classifier to spot."""
    return [nn.Upsample(scale_factor=2, mode="linear"), nn.Conv1d(cin, cout, 5, padding=2), nn.BatchNorm1d(cout), nn.ReLU()]


class DcganGenerator(nn.Module):
    """z and the class label -> a beat in [0, 1] of `window` samples (three x2 upsampling stages)."""

    def __init__(self, n_classes: int, window: int) -> None:
        super().__init__()
        self.window, self.base = window, math.ceil(window / 8)
        self.embed = nn.Embedding(n_classes, EMBED_DIM)
        self.project = nn.Sequential(nn.Linear(NOISE_DIM + EMBED_DIM, 32 * self.base), nn.BatchNorm1d(32 * self.base), nn.ReLU())
        self.up = nn.Sequential(*up(32, 32), *up(32, 16), *up(16, 16), nn.Conv1d(16, 1, 7, padding=3), nn.Sigmoid())

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.project(torch.cat([z, self.embed(y)], 1)).view(len(z), 32, self.base)
        return self.up(h)[..., : self.window]


class DcganDiscriminator(nn.Module):
    """Beat and label -> real/fake logit; the label enters by projection, not by concatenation."""

    def __init__(self, n_classes: int, window: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, 16, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv1d(16, 32, 4, 2, 1), nn.BatchNorm1d(32), nn.LeakyReLU(0.2),
            nn.Conv1d(32, 64, 4, 2, 1), nn.BatchNorm1d(64), nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        width = 64 * (window // 8)  # each k4 s2 p1 convolution halves the length, rounding down
        self.out = nn.Linear(width, 1)
        self.embed = nn.Embedding(n_classes, width)
        nn.init.zeros_(self.embed.weight)  # N(0, 1) rows over `width` features saturate D from the first step

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.out(h)[:, 0] + (self.embed(y) * h).sum(1)


def train_dcgan(train: Beats, n_classes: int, epochs: int, device: torch.device, batch: int = 128) -> DcganGenerator:
    """Train the conditional DCGAN on real beats, each epoch drawn class-balanced so minorities are learnt."""
    window = train.x.shape[1]
    g, d = DcganGenerator(n_classes, window).to(device), DcganDiscriminator(n_classes, window).to(device)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))  # Radford et al. 2016
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    x_all = torch.as_tensor(train.x, dtype=torch.float32, device=device)[:, None]
    y_all = torch.as_tensor(train.y, dtype=torch.long, device=device)
    weights = 1.0 / torch.bincount(y_all, minlength=n_classes).clamp(min=1).double()
    for _ in range(epochs):
        order = torch.multinomial(weights[y_all], len(y_all), replacement=True)
        for b in order.split(batch):
            if len(b) < 2:  # BatchNorm needs two beats
                continue
            x, y = x_all[b], y_all[b]
            fake = g(torch.randn(len(b), NOISE_DIM, device=device), y)
            ones, zeros = torch.ones(len(b), device=device), torch.zeros(len(b), device=device)
            opt_d.zero_grad(set_to_none=True)
            loss_d = F.binary_cross_entropy_with_logits(d(x, y), ones) + F.binary_cross_entropy_with_logits(d(fake.detach(), y), zeros)
            loss_d.backward()
            opt_d.step()
            opt_g.zero_grad(set_to_none=True)
            F.binary_cross_entropy_with_logits(d(fake, y), ones).backward()  # non-saturating G loss
            opt_g.step()
    return g.eval()


class Shaker(Model):
    """1D CNN trained on real plus DCGAN-synthesised minority beats (reconstructed; layer sizes ours)."""

    lr = 1e-3  # ours: Adam's usual rate for a CNN of this size
    oversample = None  # the DCGAN balances the classes instead of SMOTE
    dcgan_epochs = 5  # ours: enough for beat-shaped samples while ~10k beats stay well under 30 s on CPU
    augment_cap = 10_000  # ECG-ATK-GAN paper 3.1: minority classes raised to 10,000 beats

    def __init__(self, n_classes: int, window: int) -> None:
        super().__init__(n_classes, window)

        def stage(cin: int, cout: int, k: int, pool: bool) -> list[nn.Module]:
            return [nn.Conv1d(cin, cout, k, padding=k // 2), nn.BatchNorm1d(cout), nn.ReLU()] + ([nn.MaxPool1d(2)] if pool else [])

        self.features = nn.Sequential(*stage(1, 32, 7, True), *stage(32, 64, 5, True), *stage(64, 128, 3, True), *stage(128, 128, 3, False))
        self.head = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def augment(self, train: Beats, seed: int) -> Beats:
        """Real beats plus DCGAN beats raising each class (with >= 2 beats) to min(largest class, augment_cap)."""
        counts = np.bincount(train.y, minlength=self.n_classes)
        target = min(int(counts.max()), self.augment_cap)
        need = {c: target - int(n) for c, n in enumerate(counts) if 2 <= n < target}
        if not need:
            return train
        device = next(self.parameters()).device  # the harness builds the model on its device first
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # seeded; the harness's RNG is left alone
            torch.manual_seed(seed)
            g = train_dcgan(train, self.n_classes, self.dcgan_epochs, device)
            y = torch.cat([torch.full((n,), c, dtype=torch.long, device=device) for c, n in need.items()])
            with torch.no_grad():
                x = torch.cat([g(torch.randn(len(b), NOISE_DIM, device=device), y[b]) for b in torch.arange(len(y), device=device).split(4096)])
        # min-max scaled like every real beat (paper 3.1), else "max < 1" alone would mark a beat synthetic
        synthetic = Beats(minmax(x[:, 0].cpu().numpy()), y.cpu().numpy(), np.full(len(y), "dcgan"))
        return Beats.concat([train, synthetic])
