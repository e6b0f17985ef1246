"""The decoder's denoising loop, as diffusers' KandinskyV22Pipeline runs it, over any scheduler choice."""
from __future__ import annotations

import logging
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from .errors import KandinskyError, check_finite, check_guidance, generator
from .loading import DecoderBundle
from .schedulers import make_scheduler, step_kwargs

log = logging.getLogger(__name__)

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
    check_finite(name, embeds)
    return embeds


def batch_of(**inputs) -> int:
    """The batch that inputs of batch 1 are shared across; any other mismatch is a clear error."""
    sizes = {name: x.shape[0] for name, x in inputs.items() if x is not None}
    batches = set(sizes.values()) - {1}
    if len(batches) > 1:
        listed = ", ".join(f"{name} has batch {n}" for name, n in sizes.items())
        raise KandinskyError(f"batches differ ({listed}): give them the same batch, or a batch of 1 to share.")
    return batches.pop() if batches else 1


def fit_batch(x: torch.Tensor, batch: int) -> torch.Tensor:
    return x.expand(batch, *x.shape[1:]) if x.shape[0] != batch else x


def guidance_embeds(decoder: DecoderBundle, positive, negative, batch: int, repeat: int, cfg: bool,
                    device) -> torch.Tensor:
    """The UNet's image_embeds: [negative, positive] under guidance, each item repeated ``repeat`` times."""
    positive, negative = (fit_batch(x, batch) for x in (positive, negative))
    both = torch.cat([negative, positive]) if cfg else positive
    return both.repeat_interleave(repeat, dim=0).to(device=device, dtype=decoder.dtype)


def check_latents(decoder: DecoderBundle, latents) -> torch.Tensor:
    channels = decoder.latent_channels
    if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or latents.shape[1] != channels:
        shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise KandinskyError(f"latent has shape {shape} but this decoder takes [batch, {channels}, height, width]: "
                             f"wire in Kandinsky 2.2 MoVQ Encode's latent.")
    grid = unet_grid(decoder)
    if latents.shape[-1] % grid or latents.shape[-2] % grid:
        raise KandinskyError(f"latent is {latents.shape[-2]}x{latents.shape[-1]} but this decoder needs sides that are "
                             f"multiples of {grid}: resize the picture to a multiple of "
                             f"{grid * decoder.movq_scale_factor} pixels before MoVQ Encode.")
    check_finite("latent", latents)
    return latents


def unet_grid(decoder: DecoderBundle) -> int:
    """The UNet halves the latents once per level after the first: their sides must divide by this."""
    return 2 ** (len(decoder.unet.config.block_out_channels) - 1)


def check_inputs(decoder: DecoderBundle, positive, negative, steps: int, guidance_scale: float, **others) -> int:
    """Validate the shared inputs; the common batch of all of them."""
    check_guidance(guidance_scale)
    most = decoder.scheduler_config.get("num_train_timesteps", 1000) - 1  # the last one is off the schedule
    if not 1 <= steps <= most:
        raise KandinskyError(f"steps is {steps}: it must be between 1 and {most}.")
    width = decoder.unet.config.encoder_hid_dim
    positive = check_embeds("positive", positive, width)
    negative = check_embeds("negative", negative, width)
    return batch_of(positive=positive, negative=negative, **others)


def prepare_hint(hint: torch.Tensor, pixel_hw: tuple[int, int]) -> torch.Tensor:
    """A ControlNet hint [B, 3, H, W] in 0..1 at the latents' pixel size (resized when it differs)."""
    if hint.ndim != 4 or hint.shape[1] != 3:
        raise KandinskyError(f"hint must be an IMAGE with 3 channels, got shape {tuple(hint.shape)}.")
    if tuple(hint.shape[-2:]) != tuple(pixel_hw):
        hint = F.interpolate(hint.float(), size=pixel_hw, mode="bilinear", align_corners=False)
    return hint


def grow_repaint(keep: torch.Tensor) -> torch.Tensor:
    """The reference's prepare_mask: each repaint cell (0) also repaints 6 of its 8 neighbours (not the
    anti-diagonal ones). ``keep`` is [B, 1, h, w] with 1 = keep."""
    repaint = (keep != 1).to(keep.dtype)
    padded = F.pad(repaint, (1, 1, 1, 1))
    h, w = repaint.shape[-2:]
    grown = repaint
    for di, dj in ((1, 0), (0, 1), (1, 1), (-1, 0), (0, -1), (-1, -1)):
        grown = torch.maximum(grown, padded[..., 1 + di:1 + di + h, 1 + dj:1 + dj + w])
    return keep * (1 - grown)


def keep_mask(mask: torch.Tensor, pixel_hw: tuple[int, int], latent_hw: tuple[int, int]) -> torch.Tensor:
    """ComfyUI MASK [B, H, W] (1 = repaint) -> the reference's latent-size keep mask [B, 1, h, w] (1 = keep):
    resized to the pixel size when it differs, thresholded at 0.5, inverted, nearest down, grown."""
    mask = mask[:, None].float()
    if tuple(mask.shape[-2:]) != tuple(pixel_hw):
        mask = F.interpolate(mask, size=pixel_hw, mode="bilinear", align_corners=False)
    keep = 1 - (mask >= 0.5).float()
    return grow_repaint(F.interpolate(keep, size=latent_hw, mode="nearest"))


@torch.no_grad()
def denoise(decoder: DecoderBundle, scheduler, latents: torch.Tensor, embeds: torch.Tensor, timesteps,
            guidance_scale: float, generator: torch.Generator, callback: StepCallback | None = None, *,
            concat: torch.Tensor | None = None, hint: torch.Tensor | None = None, blend=None) -> torch.Tensor:
    """Run the UNet over ``timesteps``: guidance on the noise half of its output, the learned variance
    kept for schedulers that use it. Modes add ``concat`` channels (inpaint), a ControlNet ``hint`` (both
    already doubled for guidance) and a per-step ``blend(i, latents)`` (inpaint)."""
    cfg = guidance_scale > 1
    channels = latents.shape[1]
    learned = scheduler.config.get("variance_type") in ("learned", "learned_range")
    extra = step_kwargs(scheduler, generator)
    added = {"image_embeds": embeds} if hint is None else {"image_embeds": embeds, "hint": hint}
    for i, t in enumerate(timesteps):
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2) if cfg else latents, t)
        if concat is not None:
            model_input = torch.cat([model_input, concat], dim=1)
        pred = decoder.unet(sample=model_input, timestep=t, encoder_hidden_states=None,
                            added_cond_kwargs=added, return_dict=False)[0]
        if cfg:
            noise, variance = pred.split(channels, dim=1)
            uncond, cond = noise.chunk(2)
            pred = torch.cat([uncond + guidance_scale * (cond - uncond), variance.chunk(2)[1]], dim=1)
        if not learned:
            pred = pred[:, :channels]
        latents = scheduler.step(pred, t, latents, **extra)[0]
        if blend is not None:
            latents = blend(i, latents)
        if callback is not None:
            callback(i, len(timesteps), latents)
    return latents


def _start(decoder: DecoderBundle, scheduler: str, steps: int, seed: int, device):
    rng = generator(seed)
    sched = make_scheduler(scheduler, decoder.scheduler_config)
    sched.set_timesteps(steps, device=device)
    return sched, rng


def _doubled(x: torch.Tensor | None, cfg: bool, dtype, device):
    """A per-image UNet input for both guidance halves."""
    if x is None:
        return None
    return (torch.cat([x, x]) if cfg else x).to(device=device, dtype=dtype)


@torch.no_grad()
def txt2img(decoder: DecoderBundle, positive: torch.Tensor, negative: torch.Tensor, *, latent_hw: tuple[int, int],
            steps: int = 50, guidance_scale: float = 4.0, seed: int = 0, batch_size: int = 1,
            scheduler: str = "default", hint: torch.Tensor | None = None, device: torch.device | str = "cpu",
            callback: StepCallback | None = None) -> torch.Tensor:
    """Latents ``[B * batch_size, C, h, w]`` from noise, as KandinskyV22Pipeline (or, with a ``hint``
    [B, 3, H, W], KandinskyV22ControlnetPipeline) makes them."""
    batch = check_inputs(decoder, positive, negative, steps, guidance_scale, hint=hint)
    if batch_size < 1:
        raise KandinskyError(f"batch_size is {batch_size}: it must be 1 or more.")
    device, cfg = torch.device(device), guidance_scale > 1
    embeds = guidance_embeds(decoder, positive, negative, batch, batch_size, cfg, device)
    if hint is not None:
        pixel_hw = tuple(n * decoder.movq_scale_factor for n in latent_hw)
        hint = fit_batch(prepare_hint(hint, pixel_hw), batch).repeat_interleave(batch_size, dim=0)
    sched, generator = _start(decoder, scheduler, steps, seed, device)
    shape = (batch * batch_size, decoder.latent_channels, *latent_hw)
    latents = randn_tensor(shape, generator=generator, device=device, dtype=decoder.dtype)
    latents = latents * sched.init_noise_sigma
    return denoise(decoder, sched, latents, embeds, sched.timesteps, guidance_scale, generator, callback,
                   hint=_doubled(hint, cfg, decoder.dtype, device))


@torch.no_grad()
def img2img(decoder: DecoderBundle, positive: torch.Tensor, negative: torch.Tensor, *, latents: torch.Tensor,
            strength: float = 0.3, steps: int = 50, guidance_scale: float = 4.0, seed: int = 0,
            scheduler: str = "default", hint: torch.Tensor | None = None, device: torch.device | str = "cpu",
            callback: StepCallback | None = None) -> torch.Tensor:
    """Latents repainted from ``latents`` noised to ``strength``, as KandinskyV22Img2ImgPipeline (or, with a
    ``hint``, KandinskyV22ControlnetImg2ImgPipeline) does."""
    if not 0 <= strength <= 1:
        raise KandinskyError(f"strength is {strength}: it must be between 0 and 1.")
    batch = check_inputs(decoder, positive, negative, steps, guidance_scale, latent=check_latents(decoder, latents),
                         hint=hint)
    device, cfg = torch.device(device), guidance_scale > 1
    sched, generator = _start(decoder, scheduler, steps, seed, device)
    t_start = steps - min(int(steps * strength), steps)
    timesteps = sched.timesteps[t_start * sched.order:]
    latents = fit_batch(latents, batch).to(device=device, dtype=decoder.dtype)
    if len(timesteps) == 0:
        return latents.clone()  # strength too small for a step: nothing repainted (a copy, not a view of the input)
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(t_start * sched.order)
    embeds = guidance_embeds(decoder, positive, negative, batch, 1, cfg, device)
    if hint is not None:
        pixel_hw = tuple(n * decoder.movq_scale_factor for n in latents.shape[-2:])
        hint = fit_batch(prepare_hint(hint, pixel_hw), batch)
    noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=decoder.dtype)
    latents = sched.add_noise(latents, noise, timesteps[:1].repeat(batch))
    return denoise(decoder, sched, latents, embeds, timesteps, guidance_scale, generator, callback,
                   hint=_doubled(hint, cfg, decoder.dtype, device))


@torch.no_grad()
def inpaint(decoder: DecoderBundle, positive: torch.Tensor, negative: torch.Tensor, *, latents: torch.Tensor,
            mask: torch.Tensor, steps: int = 50, guidance_scale: float = 4.0, seed: int = 0,
            scheduler: str = "default", device: torch.device | str = "cpu",
            callback: StepCallback | None = None) -> torch.Tensor:
    """Repaint where ``mask`` [B, H, W] is 1, as KandinskyV22InpaintPipeline does, but blending every image
    of a batch with its own original (the reference blends only the first)."""
    if not isinstance(mask, torch.Tensor) or mask.ndim != 3:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise KandinskyError(f"mask must be a MASK [batch, height, width], got {shape}.")
    check_finite("mask", mask)
    batch = check_inputs(decoder, positive, negative, steps, guidance_scale, latent=check_latents(decoder, latents),
                         mask=mask)
    device, cfg = torch.device(device), guidance_scale > 1
    latent_hw = tuple(latents.shape[-2:])
    keep = keep_mask(mask, tuple(n * decoder.movq_scale_factor for n in latent_hw), latent_hw)
    if not (keep < 1).any():
        log.warning("Kandinsky 2.2 inpaint: the mask repaints nothing (all zeros): the picture comes back as it was.")
    image = fit_batch(latents, batch).to(device=device, dtype=decoder.dtype)
    keep = fit_batch(keep, batch).to(device=device, dtype=decoder.dtype)
    embeds = guidance_embeds(decoder, positive, negative, batch, 1, cfg, device)
    sched, generator = _start(decoder, scheduler, steps, seed, device)
    timesteps = sched.timesteps
    noise = randn_tensor(image.shape, generator=generator, device=device, dtype=decoder.dtype)

    def blend(i, current):
        original = image
        if i < len(timesteps) - 1:  # the kept area at the next step's noise level
            # Plain noise: add_noise scales it. The reference passes it times init_noise_sigma: the same for DDPM
            # (1), too loud for Euler's sigmas (19 times at 20 steps).
            original = sched.add_noise(image, noise, timesteps[i + 1:i + 2])
        return keep * original + (1 - keep) * current

    concat = _doubled(torch.cat([image * keep, keep], dim=1), cfg, decoder.dtype, device)
    latents = denoise(decoder, sched, noise * sched.init_noise_sigma, embeds, timesteps, guidance_scale, generator,
                      callback, concat=concat, blend=blend)
    return keep * image + (1 - keep) * latents
