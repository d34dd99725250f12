"""The imaging model: a class-conditional denoiser in pixel or latent space, plus its autoencoder.

Public handle for research code (diffusion classifiers, inversion, editing, PPAP, diagnostics)::

    model, cfg = ImagingTask().load("runs/x/model")     # or build + train
    model.denoiser            # shared.param.Denoiser: denoiser(x_t [B,*S], t [B], labels [B]) -> x0_hat
    model.process             # shared.process.NoiseProcess of the model
    model.space               # shared.spaces.Euclidean()
    model.null_class          # the class id meaning "no condition" (CFG); == model.num_classes
    model.data_shape          # (C, H, W) of the diffused variable (latent shape for latent models)
    model.conditional(labels) # DenoiseFn (x, t) -> x0_hat with the labels bound
    model.guided(labels, scale, interval=None)  # CFG DenoiseFn (shared.guidance.cfg)
    model.encode(images) / model.decode(z)      # identity for pixel models
    model.sample(labels, solver=..., grid=..., guidance_scale=..., seeds=...)  # images [B,C,H,W]

Conditions are int64 class ids ``[B]`` in ``0..num_classes``; ``num_classes`` is the null class.
For an unconditional model (``class_conditional=False``) conditions are ``None``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from shared import guidance as G
from shared.param import DenoiseFn, Denoiser
from shared.sample import prior, sample as run_sampler

__all__ = ["ImagingModel", "per_sample_generators"]


def per_sample_generators(n: int, *, generator: torch.Generator | None = None,
                          seeds: Sequence[int] | None = None, device=None) -> list[torch.Generator]:
    """``n`` independent generators: from explicit ``seeds`` (one per sample), else seeds drawn
    from ``generator`` (or from seed 0 when both are None). A sample then depends only on its own
    seed, not on the batch it is drawn in."""
    if seeds is not None:
        seeds = [int(s) for s in seeds]
        if len(seeds) != n:
            raise ValueError(f"got {len(seeds)} seeds for {n} samples")
    else:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        seeds = torch.randint(0, 2**62, (n,), generator=g, device=g.device).tolist()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return [torch.Generator(device=dev).manual_seed(s) for s in seeds]


class ImagingModel(nn.Module):
    """Denoiser (+ optional autoencoder) for images ``[B, C, H, W]`` in [-1, 1].

    Args:
        denoiser: a :class:`shared.param.Denoiser` whose net takes ``cond`` = class ids ``[B]``.
        image_shape: ``(C, H, W)`` of the images.
        num_classes: number of real classes (0 for an unconditional model); the null class id is
            ``num_classes``.
        autoencoder: ``shared.interop.diffusers.VAE`` for latent diffusion, or None (pixels).
        latent_shape: ``(C', H', W')`` of the latents when ``autoencoder`` is given.
    """

    def __init__(self, denoiser: Denoiser, *, image_shape: Sequence[int], num_classes: int,
                 autoencoder: nn.Module | None = None, latent_shape: Sequence[int] | None = None,
                 class_names: Sequence[str] = ()):
        super().__init__()
        self.denoiser = denoiser
        self.autoencoder = autoencoder
        self.image_shape = tuple(int(s) for s in image_shape)
        self.latent_shape = tuple(int(s) for s in latent_shape) if latent_shape is not None else None
        self.num_classes = int(num_classes)
        self.class_names = tuple(class_names)
        # latents = posterior mean * latent_scale (kept as a buffer so it is saved with the weights)
        self.register_buffer("latent_scale", torch.ones(()))

    # ---------------------------------------------------------------- the kernel-facing handles

    @property
    def process(self):
        return self.denoiser.process

    @property
    def space(self):
        return self.denoiser.space

    @property
    def prediction(self) -> str:
        return self.denoiser.prediction

    @property
    def is_latent(self) -> bool:
        return self.autoencoder is not None

    @property
    def conditional_model(self) -> bool:
        return self.num_classes > 0

    @property
    def null_class(self) -> int | None:
        """Class id of the "no condition" embedding (None for unconditional models)."""
        return self.num_classes if self.conditional_model else None

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape ``(C, H, W)`` of one sample of the diffused variable."""
        return self.latent_shape if self.is_latent else self.image_shape

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def labels(self, labels: Tensor | Sequence[int] | int | None, n: int | None = None) -> Tensor | None:
        """Normalise a condition: a class id for all ``n`` samples, a sequence, a tensor ``[B]``,
        or None (the null class, i.e. unconditional). Checks the range."""
        if not self.conditional_model:
            if labels is not None:
                raise ValueError("this model is unconditional; pass labels=None")
            return None
        if labels is None:
            if n is None:
                raise ValueError("pass n with labels=None")
            return torch.full((n,), self.null_class, dtype=torch.long, device=self.device)
        if isinstance(labels, int):
            if n is None:
                raise ValueError("pass n with a single class id")
            labels = [labels] * n
        y = torch.as_tensor(labels, dtype=torch.long, device=self.device).reshape(-1)
        if n is not None and y.shape[0] != n:
            raise ValueError(f"got {y.shape[0]} labels for {n} samples")
        if ((y < 0) | (y > self.num_classes)).any():
            raise ValueError(f"class ids must be in 0..{self.num_classes} ({self.num_classes} = null/unconditional), "
                             f"got {sorted(set(y.tolist()))[:10]}")
        return y

    def conditional(self, labels: Tensor | None) -> DenoiseFn:
        """``(x, t) -> x0_hat`` with class ids ``labels [B]`` bound (None: unconditional)."""
        return self.denoiser.bind(labels)

    def guided(self, labels: Tensor | None, scale: float = 1.0, *,
               interval: tuple[float, float] | None = None, rescale: float = 0.0) -> DenoiseFn:
        """Classifier-free guidance through :func:`shared.guidance.cfg` against the null class:
        scale 0 = unconditional, 1 = conditional. ``interval`` is ``(t_lo, t_hi)`` in t."""
        if labels is None or not self.conditional_model or scale == 1.0:
            return self.conditional(labels)
        null = torch.full_like(labels, self.null_class)
        if scale == 0.0:
            return self.conditional(null)
        return G.cfg(self.denoiser, labels, null, scale, interval=interval, rescale=rescale)

    # ---------------------------------------------------------------- autoencoder

    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Images ``[B, C, H, W]`` -> diffused variable (scaled latents, or the images)."""
        if not self.is_latent:
            return images
        self.autoencoder.scaling_factor = float(self.latent_scale)
        return self.autoencoder.encode(images, generator=generator)

    def decode(self, z: Tensor) -> Tensor:
        """Diffused variable -> images ``[B, C, H, W]`` (latents decoded; clamped to [-1, 1])."""
        if not self.is_latent:
            return z
        self.autoencoder.scaling_factor = float(self.latent_scale)
        return self.autoencoder.decode(z).clamp(-1, 1)

    # ---------------------------------------------------------------- sampling

    @torch.no_grad()
    def sample(self, labels: Tensor | Sequence[int] | None, *, solver, grid: Tensor, n: int | None = None,
               guidance_scale: float = 1.0, guidance_interval: tuple[float, float] | None = None,
               guidance_rescale: float = 0.0, generator: torch.Generator | None = None, seeds: Sequence[int] | None = None,
               batch_size: int = 250, hooks=(), progress: bool = False, decode: bool = True) -> Tensor:
        """Draw images ``[B, C, H, W]`` (raw sampler output; not clipped for pixel models).

        labels: class ids ``[B]`` (or None with ``n`` for unconditional samples).
        solver / grid: a :mod:`shared.solvers` solver and a decreasing grid from :mod:`shared.grid`.
        guidance_scale / guidance_interval / guidance_rescale: classifier-free guidance (see
            :meth:`guided`).
        generator / seeds: per-sample randomness (see :func:`per_sample_generators`); a sample
            depends only on its seed, not on ``batch_size``.
        """
        y = self.labels(labels, n)
        B = y.shape[0] if y is not None else n
        if B is None or B <= 0:
            raise ValueError("nothing to sample: give labels or n > 0")
        gens = per_sample_generators(B, generator=generator, seeds=seeds)
        was_training = self.training
        self.eval()
        out = []
        chunks = range(0, B, batch_size)
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc="sampling batches", leave=False)
        try:
            for s in chunks:
                e = min(B, s + batch_size)
                yc = y[s:e] if y is not None else None
                g = gens[s:e]
                den = self.guided(yc, guidance_scale, interval=guidance_interval, rescale=guidance_rescale)
                x_T = prior((e - s, *self.data_shape), process=self.process, t=float(grid[0]),
                            space=self.space, generator=g).to(self.device)
                x = run_sampler(den, x_T, grid, solver, process=self.process, space=self.space,
                                hooks=hooks, generator=g)
                out.append(self.decode(x) if decode else x)
        finally:
            self.train(was_training)
        return torch.cat(out)
