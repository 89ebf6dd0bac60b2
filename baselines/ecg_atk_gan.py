"""ECG-ATK-GAN (Hossain, Kamran, Tavakkoli & Ma 2022): a class-conditioned GAN whose discriminator classifies beats.

Where we follow the paper (section in brackets) and where we chose; "reference code" is the
authors' Keras `src/model.py`, which has no training loop:
- G(E'x, Ey, z) takes the clean or attacked beat, the label and a noise vector [2.1, eq. 3].
- z: uniform floats in [0, 1] [3.2], smoothed by a Gaussian of sigma 3 [2.1]; ours: a fixed 1D
  kernel (radius 4 sigma, scipy's default truncation) applied by conv1d with reflect padding, so
  it runs on the GPU. The reference code feeds z = 0, a bug we do not copy.
- Ours: z enters G as one extra channel at the beat's length; the reference code maps it through
  a 280 x 8960 dense layer (2.5M weights), which the text does not ask for.
- The label: embedding of size 50 projected by a dense layer to the beat length, one channel
  (reference code); the three channels are concatenated (reference code: "merge").
- G blocks [2.1, Fig. 2]: Residual (Conv k3 s1, BN, LeakyReLU, plus a skip from the convolution's
  output, as the reference code adds it), Skip-Dilated Attention (Conv k2 d2 s1, BN, LeakyReLU),
  Downsampling (Conv k3 s2, BN, LeakyReLU), Upsampling (ConvTranspose k3 s2, BN, LeakyReLU);
  kernel 3 for the strided layers and LeakyReLU slope 0.2 are the reference code's.
- G layout (reference code): Res -> SDA skip -> Down at 32, 64, 128 filters, then Up + the matching
  SDA skip (added) at 128, 64, 32, then Conv k3 to one channel and a sigmoid [2.1: output in 0-1].
- Ours: any window works; G pads the input on the right (replicate) to a multiple of 8 so the
  skips line up, and crops the output back to the input length.
- D [2.1]: three Regular (Conv k3 s1, BN, LeakyReLU) and three Downsampling blocks, alternating
  at 32, 64, 128 filters; dropout 0.2 after the first and third downsampling (the reference code's
  eight-layer D has it after its 2nd and 6th convolutions, which these are, and after its 8th).
- D heads on the flattened features [2.1]: real/fake, attacked-vs-clean (2-way softmax), class.
- Real/fake: least squares with targets +1 (real) and -1 (fake) [eq. 4]. The text names a sigmoid
  for this head, but a sigmoid cannot reach -1, so ours is a linear output, as in LSGAN. G's loss
  is (D(G) - 1)^2 (the paper gives only D's side; ours, the usual LSGAN choice).
- Eq. 4 writes D(E'x, Ey): ours, the real/fake head sees the label by projection (Miyato & Koyama
  2018), zero-initialised; the two classification heads never see the label, which would leak it.
- Losses [eqs. 1-5, 3.2]: lambda_atk = 10, lambda_ary = 10, lambda_mse = 1, kappa = [1, 1.05];
  eq. 1's kappa-weighted sum is averaged over the batch (divided by N, not by the sum of weights).
- Eq. 3's target is the clean beat E_x. The harness gives a batch without the clean originals of
  its attacked beats, so ours: the MSE runs over the clean beats of the batch only (for those,
  input and target coincide); attacked beats get no MSE term.
- D step: eq. 4 on real E'x and on G(E'x) + lambda_atk eq. 1 + lambda_ary eq. 2 on real beats.
  G step: eq. 4's G side + lambda_mse eq. 3 + lambda_atk eq. 1 + lambda_ary eq. 2 on D(G(E'x)),
  as the reference code's combined model (loss weights 1, 10, 10) trains G through all three heads.
  Written as `phase_loss` (D's loss, then G's on the updated D), which the harness steps alone or,
  packed with other trainings of this class, under `vmap` on a GPU.
- Ours: D's BatchNorm running statistics are updated on real beats only, since `forward` (the
  classifier that is attacked and scored) only ever sees real beats; fake batches still use
  their own batch statistics while training.
- Adam lr 1e-4, betas (0.5, 0.999) for both nets [3.2]; batch 128 is the harness's [3.2].
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ecgbench.contracts import Model

LAMBDA_ATK, LAMBDA_ARY, LAMBDA_MSE = 10.0, 10.0, 1.0  # paper 3.2
KAPPA = (1.0, 1.05)  # paper 3.2: clean, attacked
NOISE_SIGMA = 3.0  # paper 2.1
SLOPE = 0.2  # reference code's LeakyReLU alpha
LABEL_EMBED = 50  # reference code


# --- losses (paper 2.2), pure functions so tests can check them by hand -----------------------

def loss_atk(logits: torch.Tensor, flag: torch.Tensor, kappa: Sequence[float] = KAPPA) -> torch.Tensor:
    """Eq. 1: class-weighted cross-entropy, attacked (1) vs clean (0), averaged over the batch."""
    w = torch.where(flag == 1, float(kappa[1]), float(kappa[0])).to(logits.dtype)  # no host copy: CUDA-graph safe
    return (F.cross_entropy(logits, flag, reduction="none") * w).sum() / len(flag)


def loss_ary(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Eq. 2: categorical cross-entropy over the arrhythmia classes."""
    return F.cross_entropy(logits, y)


def loss_mse(fake: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 3: mean squared error to the clean beat, over the beats in `mask` (all if None); 0 if none."""
    if mask is None:
        return F.mse_loss(fake, target)
    w = mask.to(fake.dtype).view(-1, *([1] * (fake.dim() - 1)))  # a masked mean: no boolean indexing, no host sync
    return ((fake - target) ** 2 * w).sum() / (w.sum() * fake[0].numel()).clamp_min(1)


def loss_adv_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Eq. 4: least-squares D loss, real outputs pulled to +1 and fake ones to -1."""
    return ((real - 1) ** 2).mean() + ((fake + 1) ** 2).mean()


def loss_adv_g(fake: torch.Tensor) -> torch.Tensor:
    """G's side of eq. 4: its beats should score as real (+1)."""
    return ((fake - 1) ** 2).mean()


# --- noise (paper 2.1, 3.2) ------------------------------------------------------------------

def gaussian_kernel(sigma: float = NOISE_SIGMA, truncate: float = 4.0) -> torch.Tensor:
    """A normalised 1D Gaussian of radius truncate * sigma (scipy.ndimage's default), shaped [1, 1, k]."""
    r = int(truncate * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).view(1, 1, -1)


def smooth_noise(n: int, length: int, kernel: torch.Tensor) -> torch.Tensor:
    """z: uniform [0, 1] floats (paper 3.2) smoothed by the Gaussian kernel (paper 2.1), [n, 1, length]."""
    z = torch.rand(n, 1, length, device=kernel.device, dtype=kernel.dtype)
    r = kernel.shape[-1] // 2
    mode = "reflect" if length > r else "replicate"
    return F.conv1d(F.pad(z, (r, r), mode=mode), kernel)


# --- blocks (paper 2.1, Fig. 2) --------------------------------------------------------------

def _cbl(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm1d(channels), nn.LeakyReLU(SLOPE))


class Residual(nn.Module):
    """Conv k3 s1 -> BN -> LeakyReLU, plus the convolution's output (the skip keeps fine detail)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, 3, padding=1)
        self.act = nn.Sequential(nn.BatchNorm1d(cout), nn.LeakyReLU(SLOPE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return self.act(h) + h


def skip_dilated(c: int) -> nn.Sequential:
    return _cbl(nn.Conv1d(c, c, 2, dilation=2, padding=1), c)


def regular(cin: int, cout: int) -> nn.Sequential:
    return _cbl(nn.Conv1d(cin, cout, 3, padding=1), cout)


def down(cin: int, cout: int) -> nn.Sequential:
    return _cbl(nn.Conv1d(cin, cout, 3, stride=2, padding=1), cout)


def up(cin: int, cout: int) -> nn.Sequential:
    return _cbl(nn.ConvTranspose1d(cin, cout, 3, stride=2, padding=1, output_padding=1), cout)


class Generator(nn.Module):
    """G(E'x, Ey, z): a three-level encoder-decoder with SDA skips; output in [0, 1], input's length."""

    def __init__(self, n_classes: int, window: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_classes, LABEL_EMBED)
        self.project = nn.Linear(LABEL_EMBED, window)
        self.register_buffer("kernel", gaussian_kernel(), persistent=False)
        widths = (32, 64, 128)
        self.res = nn.ModuleList(Residual(i, o) for i, o in zip((3,) + widths[:-1], widths))
        self.sda = nn.ModuleList(skip_dilated(c) for c in widths)
        self.down = nn.ModuleList(down(c, c) for c in widths)
        self.up = nn.ModuleList(up(i, o) for i, o in zip((128, 128, 64), (128, 64, 32)))
        self.out = nn.Sequential(nn.Conv1d(32, 1, 3, padding=1), nn.Sigmoid())

    def noise(self, n: int, length: int) -> torch.Tensor:
        return smooth_noise(n, length, self.kernel)

    def forward(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        n, length = len(x), x.shape[-1]
        z = self.noise(n, length) if z is None else z
        h = torch.cat([x, self.project(self.embed(y)).view(n, 1, length), z], 1)
        h = F.pad(h, (0, -length % 8), mode="replicate")
        skips = []
        for res, sda, dn in zip(self.res, self.sda, self.down):
            h = res(h)
            skips.append(sda(h))
            h = dn(h)
        for u, skip in zip(self.up, reversed(skips)):
            h = u(h) + skip
        return self.out(h)[..., :length]


class Discriminator(nn.Module):
    """Three Regular + three Downsampling blocks and three heads: real/fake, attacked/clean, class."""

    def __init__(self, n_classes: int, window: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            regular(1, 32), down(32, 32), nn.Dropout(0.2),
            regular(32, 64), down(64, 64),
            regular(64, 128), down(128, 128), nn.Dropout(0.2),
            nn.Flatten(),
        )
        width = 128 * math.ceil(math.ceil(math.ceil(window / 2) / 2) / 2)
        self.adv = nn.Linear(width, 1)
        self.adv_label = nn.Embedding(n_classes, width)
        nn.init.zeros_(self.adv_label.weight)  # N(0, 1) rows over `width` features would saturate eq. 4 at the start
        self.atk = nn.Linear(width, 2)
        self.ary = nn.Linear(width, n_classes)

    def real_fake(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The eq. 4 output D(., Ey): a linear score plus the label's projection."""
        return self.adv(h)[:, 0] + (self.adv_label(y) * h).sum(1)


@contextmanager
def _frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """BatchNorm normalises by the batch but leaves its running statistics alone (momentum 0)."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


class EcgAtkGan(Model):
    """The paper's conditional GAN; `forward` is D's arrhythmia head, what attacks target (paper 2.3)."""

    lr = 1e-4  # paper 3.2
    betas = (0.5, 0.999)  # paper 3.2
    wants_attacked = True  # paper 3.1: trained on E'x = Ex + Exadv with attack flags

    def __init__(self, n_classes: int, window: int) -> None:
        super().__init__(n_classes, window)
        self.generator = Generator(n_classes, window)
        self.discriminator = Discriminator(n_classes, window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Arrhythmia-class logits (eq. 2 head)."""
        return self.discriminator.ary(self.discriminator.features(x))

    def detect(self, x: torch.Tensor) -> torch.Tensor:
        """Clean (0) vs attacked (1) logits (eq. 1 head)."""
        return self.discriminator.atk(self.discriminator.features(x))

    def generate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """G(E'x, Ey, z) with fresh smoothed noise."""
        return self.generator(x, y)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """[opt_D, opt_G], both Adam with the paper's settings (3.2), in the order they step (`phase_loss`)."""
        return [torch.optim.Adam(m.parameters(), lr=self.lr, betas=self.betas) for m in (self.discriminator, self.generator)]

    def phase_loss(self, phase: int, x: torch.Tensor, y: torch.Tensor, attacked: torch.Tensor,
                   carry: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. 5 as alternating LSGAN steps: phase 0 is D's loss, phase 1 G's on the D that phase 0 updated.

        The harness steps opt_D on phase 0's loss before asking for phase 1, and each phase's gradient reaches
        its own net only. G's beats are drawn once, in phase 0, and carried to phase 1 (same z)."""
        d, flag = self.discriminator, attacked.long()
        if phase == 0:
            fake = self.generator(x, y)
            h = d.features(x)
            with _frozen_bn_stats(d):
                h_fake = d.features(fake.detach())
            loss_d = (loss_adv_d(d.real_fake(h, y), d.real_fake(h_fake, y))
                      + LAMBDA_ATK * loss_atk(d.atk(h), flag) + LAMBDA_ARY * loss_ary(d.ary(h), y))
            return loss_d, {"fake": fake}
        fake = carry["fake"]
        with _frozen_bn_stats(d):
            h_fake = d.features(fake)
        loss_g = (loss_adv_g(d.real_fake(h_fake, y)) + LAMBDA_MSE * loss_mse(fake, x, flag == 0)
                  + LAMBDA_ATK * loss_atk(d.atk(h_fake), flag) + LAMBDA_ARY * loss_ary(d.ary(h_fake), y))
        return loss_g, {}
