"""The MoVQ autoencoder: latent size rules, pixels -> latents and latents -> pixels."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from .errors import KandinskyError


MAX_SIDE = 16384  # pixels; beyond it a run only ends in an out-of-memory error


def scale_factor(movq) -> int:
    """How many pixels one latent cell spans per side (8 for the real MoVQ)."""
    return 2 ** (len(movq.config.block_out_channels) - 1)


def latent_size(height: int, width: int, factor: int) -> tuple[int, int]:
    """Latent (h, w) for a pixel size: rounded up to a multiple of factor**2 pixels, as the reference does."""
    for name, value in (("height", height), ("width", width)):
        if int(value) <= 0:
            raise KandinskyError(f"{name} is {value}: it must be a positive number of pixels (64 or more).")
        if int(value) > MAX_SIDE:
            raise KandinskyError(f"{name} is {value}: at most {MAX_SIDE} pixels.")
    cells = factor**2
    return -(-int(height) // cells) * factor, -(-int(width) // cells) * factor


def check_latents(movq, latents: torch.Tensor) -> torch.Tensor:
    channels = movq.config.latent_channels
    if latents.ndim != 4 or latents.shape[1] != channels or latents.numel() == 0:
        raise KandinskyError(f"latent has shape {tuple(latents.shape)} but this MoVQ decodes [batch, {channels}, "
                             f"height, width]: wire in the latent of a Kandinsky 2.2 node.")
    return latents


@torch.no_grad()
def decode(movq, latents: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """Latents ``[B, C, h, w]`` -> pixels ``[B, 3, H, W]`` in 0..1 (float32)."""
    check_latents(movq, latents)
    param = next(movq.parameters())
    image = movq.decode(latents.to(device=device, dtype=param.dtype), force_not_quantize=True)["sample"]
    return (image * 0.5 + 0.5).clamp(0, 1).float()


def restore_size(pixels: torch.Tensor, size: tuple[int, int] | None, factor: int,
                 latent_hw: tuple[int, int]) -> torch.Tensor:
    """Decoded pixels back at the ``size`` of the picture that encode stretched up to the grid, when the latents
    still have the size that picture maps to (a latent node that resized them makes the old size meaningless)."""
    if not size or tuple(size) == tuple(pixels.shape[-2:]) or latent_size(*size, factor) != tuple(latent_hw):
        return pixels
    return F.interpolate(pixels, size=tuple(size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


@torch.no_grad()
def encode(movq, images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """Pixels ``[B, 3, H, W]`` in 0..1 -> latents. Sizes off the latent grid are resized (bicubic) up to it
    (``restore_size`` takes decoded pixels back)."""
    factor = scale_factor(movq)
    height, width = images.shape[-2:]
    h, w = latent_size(height, width, factor)
    if (h * factor, w * factor) != (height, width):
        images = F.interpolate(images, size=(h * factor, w * factor), mode="bicubic", align_corners=False)
        images = images.clamp(0, 1)
    param = next(movq.parameters())
    return movq.encode((images * 2 - 1).to(device=device, dtype=param.dtype))["latents"]


@torch.no_grad()
def preview_factors(movq, samples: int = 2, seed: int = 0) -> torch.Tensor:
    """A [C, 3] matrix taking one latent cell to roughly its pixels' colour in -1..1: a least-squares fit of
    decoded random latents, pooled to the latent grid. Cheap previews while sampling, for any MoVQ."""
    if next(movq.parameters()).dtype != torch.float32:  # half precision is slow on the CPU, where this runs
        movq = copy.deepcopy(movq).float()
    factor, channels = scale_factor(movq), movq.config.latent_channels
    latents = torch.randn(samples, channels, 8, 8, generator=torch.Generator().manual_seed(seed))
    pixels = movq.decode(latents.to(next(movq.parameters()).device), force_not_quantize=True)["sample"].float().cpu()
    pooled = F.avg_pool2d(pixels, factor)
    x = latents.permute(0, 2, 3, 1).reshape(-1, channels)
    y = pooled.permute(0, 2, 3, 1).reshape(-1, 3)
    return torch.linalg.lstsq(x, y).solution
