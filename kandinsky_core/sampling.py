"""The decoder's denoising loop, as diffusers' KandinskyV22Pipeline runs it, over any scheduler choice."""
from __future__ import annotations

from typing import Callable

import torch
from diffusers.utils.torch_utils import randn_tensor

from .errors import KandinskyError
from .loading import DecoderBundle
from .schedulers import make_scheduler, step_kwargs

StepCallback = Callable[[int, int, torch.Tensor], None]  # (step index, step count, current latents)


def check_embeds(name: str, embeds, width: int) -> torch.Tensor:
    """A finite float tensor [B, width], or a clear error naming the input."""
    if not isinstance(embeds, torch.Tensor) or embeds.ndim != 2:
        shape = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
        raise KandinskyError(f"{name} must be K22_EMBEDS of shape [batch, {width}], got {shape}: wire in the "
                             f"output of a Kandinsky 2.2 prior or embeds node.")
    if embeds.shape[1] != width:
        raise KandinskyError(f"{name} has width {embeds.shape[1]} but this decoder takes {width}: use the prior "
                             f"that belongs to this decoder (Kandinsky 2.2, not 2.1).")
    if not torch.isfinite(embeds).all():
        raise KandinskyError(f"{name} holds NaN or infinite values: check the nodes that made it.")
    return embeds


def guidance_embeds(decoder: DecoderBundle, positive, negative, repeat: int, cfg: bool, device) -> torch.Tensor:
    """The UNet's image_embeds: [negative, positive] under guidance, each item repeated ``repeat`` times."""
    width = decoder.unet.config.encoder_hid_dim
    positive = check_embeds("positive", positive, width)
    negative = check_embeds("negative", negative, width)
    if negative.shape[0] not in (1, positive.shape[0]):
        raise KandinskyError(f"negative has batch {negative.shape[0]} but positive has {positive.shape[0]}: "
                             f"wire both from the same prior node, or give a negative of batch 1.")
    negative = negative.expand(positive.shape[0], -1)
    both = torch.cat([negative, positive]) if cfg else positive
    return both.repeat_interleave(repeat, dim=0).to(device=device, dtype=decoder.dtype)


@torch.no_grad()
def denoise(decoder: DecoderBundle, scheduler, latents: torch.Tensor, embeds: torch.Tensor, timesteps,
            guidance_scale: float, generator: torch.Generator, callback: StepCallback | None = None) -> torch.Tensor:
    """Run the UNet over ``timesteps``: guidance on the noise half of its output, the learned variance
    kept for schedulers that use it."""
    cfg = guidance_scale > 1
    channels = latents.shape[1]
    learned = scheduler.config.get("variance_type") in ("learned", "learned_range")
    extra = step_kwargs(scheduler, generator)
    for i, t in enumerate(timesteps):
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2) if cfg else latents, t)
        pred = decoder.unet(sample=model_input, timestep=t, encoder_hidden_states=None,
                            added_cond_kwargs={"image_embeds": embeds}, return_dict=False)[0]
        if cfg:
            noise, variance = pred.split(channels, dim=1)
            uncond, cond = noise.chunk(2)
            pred = torch.cat([uncond + guidance_scale * (cond - uncond), variance.chunk(2)[1]], dim=1)
        if not learned:
            pred = pred[:, :channels]
        latents = scheduler.step(pred, t, latents, **extra)[0]
        if callback is not None:
            callback(i, len(timesteps), latents)
    return latents


def check_steps(steps: int) -> None:
    if steps < 1:
        raise KandinskyError(f"steps is {steps}: it must be 1 or more.")


@torch.no_grad()
def txt2img(decoder: DecoderBundle, positive: torch.Tensor, negative: torch.Tensor, *, latent_hw: tuple[int, int],
            steps: int = 50, guidance_scale: float = 4.0, seed: int = 0, batch_size: int = 1,
            scheduler: str = "default", device: torch.device | str = "cpu",
            callback: StepCallback | None = None) -> torch.Tensor:
    """Latents ``[B * batch_size, 4, h, w]`` from noise, as KandinskyV22Pipeline makes them."""
    check_steps(steps)
    if batch_size < 1:
        raise KandinskyError(f"batch_size is {batch_size}: it must be 1 or more.")
    device = torch.device(device)
    embeds = guidance_embeds(decoder, positive, negative, batch_size, guidance_scale > 1, device)
    sched = make_scheduler(scheduler, decoder.scheduler_config)
    sched.set_timesteps(steps, device=device)
    generator = torch.Generator("cpu").manual_seed(seed)
    shape = (positive.shape[0] * batch_size, decoder.unet.config.in_channels, *latent_hw)
    latents = randn_tensor(shape, generator=generator, device=device, dtype=decoder.dtype)
    latents = latents * sched.init_noise_sigma
    return denoise(decoder, sched, latents, embeds, sched.timesteps, guidance_scale, generator, callback)
