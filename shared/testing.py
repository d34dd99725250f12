"""Oracles for testing samplers: isotropic Gaussian mixtures have exact denoisers, scores and
densities at every noise level.

For ``x0 ~ sum_k pi_k N(m_k, v_k I)`` and ``x_t = a x0 + s eps``, ``x_t`` is a mixture of
``N(a m_k, (a^2 v_k + s^2) I)`` and ``E[x0 | x_t] = sum_k r_k(x_t) (m_k + a v_k / (a^2 v_k + s^2)
(x_t - a m_k))`` with responsibilities ``r_k``. Everything is float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class GMM:
    means: Tensor    # [K, d]
    variances: Tensor  # [K]
    weights: Tensor  # [K]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _comp(self, x: Tensor, a: Tensor, s: Tensor):
        # x: [B, d], a, s: [B]
        var = a[:, None] ** 2 * self.variances[None] + s[:, None] ** 2  # [B, K]
        diff = x[:, None, :] - a[:, None, None] * self.means[None]  # [B, K, d]
        logp = (torch.log(self.weights)[None] - 0.5 * self.dim * torch.log(2 * math.pi * var)
                - 0.5 * (diff**2).sum(-1) / var)
        return var, diff, logp

    def log_prob(self, x: Tensor, a: Tensor | None = None, s: Tensor | None = None) -> Tensor:
        B = x.shape[0]
        a = torch.ones(B, dtype=x.dtype) if a is None else a
        s = torch.zeros(B, dtype=x.dtype) if s is None else s
        _, _, logp = self._comp(x, a, s)
        return torch.logsumexp(logp, -1)

    def denoiser(self, process):
        def D(x: Tensor, t: Tensor) -> Tensor:
            shape = x.shape
            x2 = x.reshape(shape[0], -1).to(torch.float64)
            a, s = process.alpha(t).to(x2), process.sigma(t).to(x2)
            var, diff, logp = self._comp(x2, a, s)
            r = torch.softmax(logp, -1)  # [B, K]
            post = self.means[None] + (a[:, None] * self.variances[None] / var)[..., None] * diff
            return (r[..., None] * post).sum(1).reshape(shape).to(x.dtype)
        D.process = process
        return D

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[k] + self.variances[k].sqrt()[:, None] * z


def two_d_mixture() -> GMM:
    """The 3-component 2-D mixture used by the kernel tests and benchmark."""
    return GMM(means=torch.tensor([[-1.0, 0.5], [1.2, -0.3], [0.2, 1.5]], dtype=torch.float64),
               variances=torch.tensor([0.15, 0.3, 0.08], dtype=torch.float64),
               weights=torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
