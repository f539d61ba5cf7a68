"""Loss terms of the conditional VAE (paper Eq. 1): ``L = L_recon + lambda_grad L_grad + lambda_KL L_KL``.

Every term is a MEAN, computed in float32 whatever the autocast dtype:

* ``L_recon`` -- L1 distance of the ``[real, imag]`` channels, mean over ``B x 2 x H x W`` elements.
* ``L_grad`` -- L1 distance of the forward finite differences of the real and imaginary channels along
  rows and columns (``x[..., 1:, :] - x[..., :-1, :]`` and ``x[..., :, 1:] - x[..., :, :-1]``), each
  direction averaged over its elements, the two directions summed. Penalises blurred edges, which
  plain L1 tolerates.
* ``L_KL`` -- ``KL(N(mu, sigma^2) || N(0, 1))`` per latent element,
  ``0.5 (mu^2 + sigma^2 - 1 - log sigma^2)``, averaged over ``B x C x h x w`` latent elements.
  Normalisation: a mean per latent ELEMENT (not a sum per sample), so ``lambda_KL`` does not change
  meaning with the latent size. The sum-per-sample KL of the usual ELBO is ``C h w`` times this value
  (4608 for the paper's 2 x 48 x 48 latent).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def reconstruction_l1(x_hat: Tensor, x: Tensor) -> Tensor:
    """Mean absolute error over all elements, float32 0-d tensor."""
    return (x_hat.float() - x.float()).abs().mean()


def finite_differences(x: Tensor) -> tuple[Tensor, Tensor]:
    """Forward differences along rows (``dy``, ``... x H-1 x W``) and columns (``dx``, ``... x H x W-1``)."""
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def gradient_l1(x_hat: Tensor, x: Tensor) -> Tensor:
    """L1 distance of spatial finite differences (rows + columns), each direction a mean; float32."""
    dy_hat, dx_hat = finite_differences(x_hat.float())
    dy, dx = finite_differences(x.float())
    return (dy_hat - dy).abs().mean() + (dx_hat - dx).abs().mean()


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, 1))`` averaged over latent elements (see module docstring); float32."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).mean()


@dataclass(frozen=True)
class VAELossTerms:
    """The total loss and its unweighted terms (float32 0-d tensors)."""

    total: Tensor
    recon: Tensor
    grad: Tensor
    kl: Tensor


def vae_loss(
    x_hat: Tensor, x: Tensor, mu: Tensor, logvar: Tensor, lambda_grad: float, lambda_kl: float
) -> VAELossTerms:
    """Paper Eq. 1 with the normalisations of the module docstring.

    Args:
        x_hat, x: ``B x 2 x H x W`` reconstruction and target ([real, imag]).
        mu, logvar: posterior parameters ``B x C x h x w``.
        lambda_grad, lambda_kl: weights of the gradient and KL terms.
    """
    recon = reconstruction_l1(x_hat, x)
    grad = gradient_l1(x_hat, x)
    kl = kl_standard_normal(mu, logvar)
    total = recon + lambda_grad * grad + lambda_kl * kl
    return VAELossTerms(total=total.to(torch.float32), recon=recon, grad=grad, kl=kl)


__all__ = [
    "VAELossTerms",
    "finite_differences",
    "gradient_l1",
    "kl_standard_normal",
    "reconstruction_l1",
    "vae_loss",
]
