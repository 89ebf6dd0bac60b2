"""Smooth Adversarial Perturbation (SAP) of Han et al. 2020, "Deep learning models for
electrocardiograms are susceptible to adversarial attack", Nature Medicine 26:360-363.

Threat model: white-box (gradients of the model's loss), untargeted, L-inf budget `eps` on the
dataset's value range. The perturbation is not free: r = mean_k (theta * g_k), the average of the
convolutions of a free parameter theta with Gaussian kernels g_k, so it is smooth and looks like
the wander and noise of a real ECG rather than PGD's sample-to-sample sign pattern. Each g_k is
positive and sums to one, so |r| <= max|theta| <= eps: the eps-ball holds by construction.

As in the authors' code (github.com/XintianHan/ADV_ECG, create_adv_conv_train.py): 25 kernels,
widths 5, 7, 11, 15, 19 samples x sigmas 1, 3, 5, 7, 10 samples; theta starts from a PGD
perturbation of `max_iter` steps, then takes 2 * `max_iter` signed-gradient steps of `eps_step`,
clipped to [-eps, eps]. Their ECGs are 300 Hz, ours 360 Hz, so the kernels span 17 % less time.
Ours: eps 0.01 on the [0, 1] beat scale (ECG-ATK-GAN paper 2.3, as for the other attacks; Han et
al.'s eps 10 is in raw AliveCor units), eps_step eps / 10 (theirs: 1 for eps 10), and the attacked
beat is clipped to the value range, which their raw signals did not need.
Shapes: x [batch, 1, window], y [batch]; returns x's shape, on x's device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ecgbench.contracts import Attack

__all__ = ["SAP", "sap_kernel"]

WIDTHS = (5, 7, 11, 15, 19)  # Han et al. 2020, code
SIGMAS = (1.0, 3.0, 5.0, 7.0, 10.0)  # Han et al. 2020, code


def sap_kernel(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The mean of the 25 normalised Gaussian kernels, each centred in a width of 19: shape [1, 1, 19].

    The mean of the 25 convolutions is one convolution with this kernel (with the same zero padding),
    so an attack step costs one convolution, not 25.
    """
    size, kernels = max(WIDTHS), []
    for width in WIDTHS:
        t = torch.arange(width, dtype=torch.float64) - width // 2
        for sigma in SIGMAS:
            g = torch.exp(-t**2 / (2 * sigma**2))
            kernels.append(F.pad(g / g.sum(), ((size - width) // 2,) * 2))
    return torch.stack(kernels).mean(0).view(1, 1, size).to(device, dtype)


class SAP(Attack):
    """Smooth adversarial perturbation (Han et al. 2020): PGD on theta, where x_adv = x + smooth(theta)."""

    name = "sap"
    backends = ("torch",)
    bounded = True
    defaults = {"eps": 0.01, "eps_step": 0.001, "max_iter": 20}

    def run_torch(self, model, x, y, value_range):
        lo, hi = (float(v) for v in value_range)
        eps, step, steps = self.eps, float(self.params["eps_step"]), int(self.params["max_iter"])
        kernel = sap_kernel(x.device, x.dtype)
        model.eval()

        def smooth(theta: torch.Tensor) -> torch.Tensor:
            return F.conv1d(theta, kernel, padding=kernel.shape[-1] // 2)

        def ascend(theta: torch.Tensor, smoothed: bool) -> torch.Tensor:
            theta.requires_grad_(True)
            r = smooth(theta) if smoothed else theta
            (grad,) = torch.autograd.grad(F.cross_entropy(model((x + r).clamp(lo, hi)), y), theta)
            return (theta.detach() + step * grad.sign()).clamp(-eps, eps)

        theta = torch.zeros_like(x)
        for _ in range(steps):  # warm start: plain PGD, as in Han et al.'s code
            theta = ascend(theta, smoothed=False)
        for _ in range(2 * steps):
            theta = ascend(theta, smoothed=True)
        return (x + smooth(theta)).clamp(lo, hi).detach()
