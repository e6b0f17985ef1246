"""The MoVQ autoencoder and the latent grid it defines: latent sides <-> pixel sides, the shape of latents,
pixels -> latents and latents -> pixels, and the colour fit previews use."""
from __future__ import annotations

import copy
import functools

import torch
import torch.nn.functional as F

from .errors import KandinskyError, describe

MAX_SIDE = 16384  # pixels; beyond it a run only ends in an out-of-memory error


def downscale(model) -> int:
    """2 ** (levels - 1): how many times a VQModel's or a UNet's input side is its smallest side (8 for the real
    MoVQ's pixels per latent cell; the UNet's latent sides must divide by its own)."""
    return 2 ** (len(model.config.block_out_channels) - 1)


def latent_size(height: int, width: int, factor: int) -> tuple[int, int]:
    """Latent (h, w) for a pixel size, rounded up to a multiple of factor**2 pixels: diffusers'
    ``downscale_height_and_width`` (pipeline_kandinsky2_2.py)."""
    for name, value in (("height", height), ("width", width)):
        if int(value) <= 0:
            raise KandinskyError(f"{name} is {value}: it must be a positive number of pixels (64 or more).")
        if int(value) > MAX_SIDE:
            raise KandinskyError(f"{name} is {value}: at most {MAX_SIDE} pixels.")
    cells = factor**2
    return -(-int(height) // cells) * factor, -(-int(width) // cells) * factor


def pixel_size(latent_hw, factor: int) -> tuple[int, int]:
    """The pixel (height, width) of latents of sides ``latent_hw``."""
    return tuple(int(n) * factor for n in latent_hw)


def check_latents(latents, channels: int, whose: str) -> torch.Tensor:
    """Latents [batch, channels, height, width] with something in them, or a clear error naming ``whose`` they are."""
    shaped = isinstance(latents, torch.Tensor) and latents.ndim == 4 and latents.shape[1] == channels
    if not shaped or not latents.numel():
        raise KandinskyError(f"latent has shape {describe(latents)} but {whose} takes [batch, {channels}, height, "
                             f"width]", "latent")
    return latents


@functools.cache
def _lean_spatial_norm() -> type:
    from diffusers.models.attention_processor import SpatialNorm

    class LeanSpatialNorm(SpatialNorm):
        """diffusers' SpatialNorm with its product and sum made in the normalised tensor: the same operations in the
        same order (the same values), two feature maps fewer alive at the MoVQ decode's peak (163 -> 100 MiB
        decoding 256 px at mid size). Under autograd, which needs the tensors it would overwrite, diffusers' own."""

        def forward(self, f: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
            if torch.is_grad_enabled():
                return super().forward(f, zq)
            zq = F.interpolate(zq, size=f.shape[-2:], mode="nearest")
            return self.norm_layer(f).mul_(self.conv_y(zq)).add_(self.conv_b(zq))

    return LeanSpatialNorm


def lean(movq):
    """``movq`` with its decoder's SpatialNorms made ``LeanSpatialNorm`` (in place)."""
    cls = _lean_spatial_norm()
    for module in movq.modules():
        if type(module) is cls.__base__:
            module.__class__ = cls
    return movq


@torch.no_grad()
def decode(movq, latents: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """Latents ``[B, C, h, w]`` -> pixels ``[B, 3, H, W]`` in 0..1 (float32): the pipelines' ``movq.decode`` with
    ``force_not_quantize`` and their post-processing."""
    check_latents(latents, movq.config.latent_channels, "this MoVQ")
    param = next(movq.parameters())
    image = movq.decode(latents.to(device=device, dtype=param.dtype), force_not_quantize=True)["sample"]
    return (image * 0.5 + 0.5).clamp(0, 1).float()


def restore_size(pixels: torch.Tensor, size: tuple[int, int] | None, latent_hw: tuple[int, int]) -> torch.Tensor:
    """Decoded pixels back at the ``size`` of the picture that encode stretched up to the grid, when the latents
    still have the size that picture maps to (latents resized since then make the old size meaningless)."""
    factor = pixels.shape[-2] // latent_hw[0]
    if not size or tuple(size) == tuple(pixels.shape[-2:]) or latent_size(*size, factor) != tuple(latent_hw):
        return pixels
    return F.interpolate(pixels, size=tuple(size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


@torch.no_grad()
def encode(movq, images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """Pixels ``[B, 3, H, W]`` in 0..1 -> latents, as the img2img pipelines' ``prepare_latents`` encodes them. Sizes
    off the latent grid are resized (bicubic) up to it (``restore_size`` takes decoded pixels back)."""
    factor = downscale(movq)
    grid_hw = pixel_size(latent_size(*images.shape[-2:], factor), factor)
    if grid_hw != tuple(images.shape[-2:]):
        images = F.interpolate(images, size=grid_hw, mode="bicubic", align_corners=False).clamp(0, 1)
    param = next(movq.parameters())
    return movq.encode((images * 2 - 1).to(device=device, dtype=param.dtype))["latents"]


@torch.no_grad()
def preview_factors(movq, samples: int = 2, seed: int = 0) -> torch.Tensor:
    """A [C, 3] matrix taking one latent cell to roughly its pixels' colour in -1..1: a least-squares fit of
    decoded random latents, pooled to the latent grid. Cheap previews while sampling, for any MoVQ."""
    if next(movq.parameters()).dtype != torch.float32:  # half precision is slow on the CPU, where this runs
        movq = copy.deepcopy(movq).float()
    factor, channels = downscale(movq), movq.config.latent_channels
    latents = torch.randn(samples, channels, 8, 8, generator=torch.Generator().manual_seed(seed))
    pixels = movq.decode(latents.to(next(movq.parameters()).device), force_not_quantize=True)["sample"].float().cpu()
    pooled = F.avg_pool2d(pixels, factor)
    x = latents.permute(0, 2, 3, 1).reshape(-1, channels)
    y = pooled.permute(0, 2, 3, 1).reshape(-1, 3)
    return torch.linalg.lstsq(x, y).solution
