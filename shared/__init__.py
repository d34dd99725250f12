"""diffsuite kernel: exact, stateless, shape-agnostic diffusion numerics.

Conventions (every module in ``shared`` and every domain follows them):

* Continuous time ``t`` in ``[0, 1]``, a float tensor of shape ``[B]``; ``t = 0`` is data and
  ``t = 1`` is noise. Discrete DDPM schedules map train index ``i`` to ``t = (i + 1) / N``.
* Every process is ``x_t = alpha(t) * x_0 + sigma(t) * eps`` with
  ``log_snr(t) = 2 * log(alpha / sigma)`` and its inverse ``t_of_log_snr``.
  ``sigma(t) / alpha(t)`` is the EDM / k-diffusion noise level of the scaled variable ``x / alpha``.
* Samplers only ever see a denoiser ``D(x_t, t) -> x0_hat`` (condition bound). eps / x0 / v /
  score / flow-velocity network outputs are converted exactly at the model boundary
  (:mod:`shared.param`).
* No implicit clipping and no image-shaped broadcasting: a :class:`~shared.spaces.Space` owns
  noise, projection, broadcasting of per-sample coefficients and per-sample reductions.
* All randomness comes from an argument: a ``torch.Generator``, a list of per-sample generators
  (a sample then does not depend on the batch it was drawn in), or a noise function.
* Coefficient math is done in float64 and cast to the data dtype, so bf16 networks are safe.

``import shared`` is light: it imports torch only. Heavy domain packages are imported by the
domains where they are used.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
