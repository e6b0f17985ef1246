"""The decoder's denoising runs, as diffusers' KandinskyV22 decoder pipelines run them, over any scheduler choice."""
from __future__ import annotations

import contextlib
import logging
from typing import Callable, ContextManager

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from .errors import KandinskyError, check_finite, describe
from .loading import DecoderBundle
from .movq import check_latents, downscale, latent_size, pixel_size
from .schedulers import StepCallback, check_guidance, generator, make_scheduler, start_step, step_kwargs

log = logging.getLogger(__name__)

# Latent cells of one UNet call (batch x h x w, both guidance halves) -> a context loading the UNet, yielding its device
Load = Callable[[int], ContextManager[torch.device]]


def on_cpu(cells: int) -> ContextManager[torch.device]:
    return contextlib.nullcontext(torch.device("cpu"))


def check_embeds(name: str, embeds, width: int | None = None) -> torch.Tensor:
    """A finite tensor [B, width] (any width when None), or a clear error naming the input."""
    if not isinstance(embeds, torch.Tensor) or embeds.ndim != 2 or not embeds.numel():
        raise KandinskyError(f"{name} must be image embeddings [batch, {width or 'width'}], got {describe(embeds)}",
                             name)
    if width is not None and embeds.shape[1] != width:
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
    """The UNet's image_embeds, the pipelines' ``torch.cat([negative, positive])`` under guidance, each item repeated
    ``repeat`` times (their ``num_images_per_prompt``)."""
    positive, negative = (fit_batch(x, batch) for x in (positive, negative))
    both = torch.cat([negative, positive]) if cfg else positive
    return both.repeat_interleave(repeat, dim=0).to(device=device, dtype=decoder.dtype)


def _check_latents(decoder: DecoderBundle, latents) -> torch.Tensor:
    check_latents(latents, decoder.latent_channels, "this decoder")
    grid = downscale(decoder.unet)
    if latents.shape[-1] % grid or latents.shape[-2] % grid:
        step = grid * decoder.movq_scale_factor
        sides = {name: sorted({side // grid * step, -(-side // grid) * step} - {0})
                 for name, side in zip(("height", "width"), latents.shape[-2:])}
        near = ", ".join(f"{name} {' or '.join(map(str, sizes))}" for name, sizes in sides.items())
        raise KandinskyError(f"latent is {latents.shape[-2]}x{latents.shape[-1]} but this decoder needs sides that are "
                             f"multiples of {grid}, pictures of multiples of {step} pixels: the nearest sizes that "
                             f"work are {near} pixels. Resize the picture (or make the empty latent) at such a size, "
                             f"or sample with KSampler and the loader's MODEL, which takes any size.")
    check_finite("latent", latents)
    return latents


def _prepare(decoder: DecoderBundle, positive, negative, steps: int, guidance_scale: float, scheduler: str,
             seed: int, **others):
    """Check what every mode takes: (the common batch of the inputs, the noise generator, the scheduler)."""
    check_guidance(guidance_scale)
    most = decoder.scheduler_config.get("num_train_timesteps", 1000) - 1  # the last one is off the schedule
    if not 1 <= steps <= most:
        raise KandinskyError(f"steps is {steps}: it must be between 1 and {most}.")
    width = decoder.unet.config.encoder_hid_dim
    positive = check_embeds("positive", positive, width)
    negative = check_embeds("negative", negative, width)
    batch = batch_of(positive=positive, negative=negative, **others)
    return batch, generator(seed), make_scheduler(scheduler, decoder.scheduler_config)


def prepare_hint(hint, pixel_hw: tuple[int, int], batch: int) -> torch.Tensor:
    """A ControlNet hint [B, 3, H, W] in 0..1 at the latents' pixel size: resized when it differs, where the ControlNet
    pipelines take it as it is."""
    if not isinstance(hint, torch.Tensor) or hint.ndim != 4 or hint.shape[1] != 3:
        raise KandinskyError(f"hint must be pictures [batch, 3, height, width], got {describe(hint)}", "hint")
    if tuple(hint.shape[-2:]) != tuple(pixel_hw):
        hint = F.interpolate(hint.float(), size=pixel_hw, mode="bilinear", align_corners=False)
    return fit_batch(hint, batch)


def grow_repaint(keep: torch.Tensor) -> torch.Tensor:
    """diffusers' ``prepare_mask`` (pipeline_kandinsky2_2_inpainting.py) without its Python loops: each repaint cell
    (0) also repaints 6 of its 8 neighbours (not the anti-diagonal ones). ``keep`` is [B, 1, h, w], 1 = keep."""
    repaint = (keep != 1).to(keep.dtype)
    padded = F.pad(repaint, (1, 1, 1, 1))
    h, w = repaint.shape[-2:]
    grown = repaint
    for di, dj in ((1, 0), (0, 1), (1, 1), (-1, 0), (0, -1), (-1, -1)):
        grown = torch.maximum(grown, padded[..., 1 + di:1 + di + h, 1 + dj:1 + dj + w])
    return keep * (1 - grown)


def keep_mask(mask: torch.Tensor, pixel_hw: tuple[int, int], latent_hw: tuple[int, int]) -> torch.Tensor:
    """A mask [B, H, W] (1 = repaint) -> the latent-size keep mask [B, 1, h, w] (1 = keep) that
    KandinskyV22InpaintPipeline makes (prepare_mask_and_masked_image, F.interpolate, prepare_mask): resized to the
    pixel size when it differs, thresholded at 0.5, inverted, nearest down, grown. The reference takes 1 = keep."""
    mask = mask[:, None].float()
    if tuple(mask.shape[-2:]) != tuple(pixel_hw):
        mask = F.interpolate(mask, size=pixel_hw, mode="bilinear", align_corners=False)
    keep = 1 - (mask >= 0.5).float()
    return grow_repaint(F.interpolate(keep, size=latent_hw, mode="nearest"))


@torch.no_grad()
def denoise(decoder: DecoderBundle, scheduler, latents: torch.Tensor, embeds: torch.Tensor, timesteps,
            guidance_scale: float, generator: torch.Generator, callback: StepCallback | None = None, *,
            concat: torch.Tensor | None = None, hint: torch.Tensor | None = None, blend=None) -> torch.Tensor:
    """The pipelines' loop over ``timesteps``: guidance on the noise half of the UNet's output, the learned
    variance kept for schedulers that use it. Modes add ``concat`` channels (inpaint), a ControlNet ``hint`` (both
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


def masked_image(image: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The inpaint UNet's extra input channels, after the latents: the pipeline's ``[masked_image, mask]``, the
    picture's latents where kept (keep [B, 1, h, w], 1 = keep) and the keep mask."""
    return torch.cat([image * keep, keep], dim=1)


def predict_noise(unet, x: torch.Tensor, timesteps: torch.Tensor, image_embeds: torch.Tensor, channels: int,
                  hint: torch.Tensor | None = None) -> torch.Tensor:
    """The UNet's noise prediction (its learned-variance half dropped) for latents of any size, for samplers other
    than diffusers': its up blocks cannot take sides off its grid, so ``x`` (and a ``hint``) is padded to the grid
    (edge values repeated) and the prediction cropped back."""
    h, w = x.shape[-2:]
    grid = downscale(unet)
    pad_h, pad_w = -h % grid, -w % grid
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        if hint is not None:
            scale = hint.shape[-1] // w
            hint = F.pad(hint, (0, pad_w * scale, 0, pad_h * scale), mode="replicate")
    added = {"image_embeds": image_embeds} if hint is None else {"image_embeds": image_embeds, "hint": hint}
    out = unet(x, timesteps, encoder_hidden_states=None, added_cond_kwargs=added, return_dict=False)[0]
    return out[:, :channels, :h, :w]


def _keeping(sched, image: torch.Tensor, noise: torch.Tensor, keep: torch.Tensor, timesteps):
    """The per-step ``blend`` that keeps ``image`` where ``keep`` is 1: there the latents are the picture at the next
    step's noise level (the inpaint pipeline's per-step blend; KSampler's with a LATENT's noise_mask)."""
    def blend(i, current):
        original = image
        if i < len(timesteps) - 1:
            # Plain noise: add_noise scales it. The reference passes it times init_noise_sigma: the same for DDPM
            # (1), too loud for Euler's sigmas (19 times at 20 steps).
            original = sched.add_noise(image, noise, timesteps[i + 1:i + 2])
        return keep * original + (1 - keep) * current

    return blend


def _check_mask(mask) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.ndim != 3 or not mask.numel():
        raise KandinskyError(f"mask must be [batch, height, width], got {describe(mask)}", "mask")
    check_finite("mask", mask)
    return mask


def _cells(batch: int, latent_hw) -> int:
    """Latent cells of one UNet call, budgeted for both guidance halves: twice the batch times the latent area."""
    return 2 * batch * int(latent_hw[0]) * int(latent_hw[1])


def _doubled(x: torch.Tensor | None, cfg: bool, dtype, device):
    """A per-image UNet input for both guidance halves (the pipelines' ``torch.cat([hint, hint])``)."""
    if x is None:
        return None
    return (torch.cat([x, x]) if cfg else x).to(device=device, dtype=dtype)


@torch.no_grad()
def txt2img(decoder: DecoderBundle, positive: torch.Tensor, negative: torch.Tensor, *, height: int, width: int,
            steps: int = 50, guidance_scale: float = 4.0, seed: int = 0, batch_size: int = 1,
            scheduler: str = "default", hint: torch.Tensor | None = None, load: Load = on_cpu,
            callback: StepCallback | None = None) -> torch.Tensor:
    """Latents ``[B * batch_size, C, h, w]`` of a picture of ``height`` x ``width`` pixels (rounded up to the
    grid) from noise, as KandinskyV22Pipeline (or, with a ``hint`` [B, 3, H, W], KandinskyV22ControlnetPipeline)
    makes them."""
    batch, rng, sched = _prepare(decoder, positive, negative, steps, guidance_scale, scheduler, seed, hint=hint)
    if batch_size < 1:
        raise KandinskyError(f"batch_size is {batch_size}: it must be 1 or more.")
    latent_hw = latent_size(height, width, decoder.movq_scale_factor)
    cfg = guidance_scale > 1
    if hint is not None:
        hint = prepare_hint(hint, pixel_size(latent_hw, decoder.movq_scale_factor), batch)
        hint = hint.repeat_interleave(batch_size, dim=0)
    shape = (batch * batch_size, decoder.latent_channels, *latent_hw)
    with load(_cells(shape[0], latent_hw)) as device:
        embeds = guidance_embeds(decoder, positive, negative, batch, batch_size, cfg, device)
        sched.set_timesteps(steps, device=device)
        latents = randn_tensor(shape, generator=rng, device=device, dtype=decoder.dtype) * sched.init_noise_sigma
        return denoise(decoder, sched, latents, embeds, sched.timesteps, guidance_scale, rng, callback,
                       hint=_doubled(hint, cfg, decoder.dtype, device))


@torch.no_grad()
def img2img(decoder: DecoderBundle, positive: torch.Tensor, negative: torch.Tensor, *, latents: torch.Tensor,
            strength: float = 0.3, steps: int = 50, guidance_scale: float = 4.0, seed: int = 0,
            scheduler: str = "default", hint: torch.Tensor | None = None, mask: torch.Tensor | None = None,
            load: Load = on_cpu, callback: StepCallback | None = None) -> torch.Tensor:
    """Latents repainted from ``latents`` noised to ``strength``, as KandinskyV22Img2ImgPipeline (or, with a
    ``hint``, KandinskyV22ControlnetImg2ImgPipeline) does; non-square pictures keep their size (the reference swaps
    width and height). A ``mask`` [B, H, W] (1 = repaint, any size, soft edges kept) repaints only its area, as
    ComfyUI's KSampler does with a LATENT's noise_mask."""
    first = start_step(steps, strength)
    if mask is not None:
        mask = _check_mask(mask)
    batch, rng, sched = _prepare(decoder, positive, negative, steps, guidance_scale, scheduler, seed,
                                 latent=_check_latents(decoder, latents), hint=hint, mask=mask)
    cfg = guidance_scale > 1
    if hint is not None:
        hint = prepare_hint(hint, pixel_size(latents.shape[-2:], decoder.movq_scale_factor), batch)
    with load(_cells(batch, latents.shape[-2:])) as device:
        sched.set_timesteps(steps, device=device)
        timesteps = sched.timesteps[first * sched.order:]
        latents = fit_batch(latents, batch).to(device=device, dtype=decoder.dtype)
        if len(timesteps) == 0:
            return latents.clone()  # strength too small for a step: nothing repainted (a copy, not a view of the input)
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(first * sched.order)
        embeds = guidance_embeds(decoder, positive, negative, batch, 1, cfg, device)
        noise = randn_tensor(latents.shape, generator=rng, device=device, dtype=decoder.dtype)
        image, latents = latents, sched.add_noise(latents, noise, timesteps[:1].repeat(batch))
        keep = None
        if mask is not None:
            keep = 1 - F.interpolate(mask[:, None].float(), size=image.shape[-2:], mode="bilinear")
            keep = fit_batch(keep, batch).to(device=device, dtype=decoder.dtype)
        latents = denoise(decoder, sched, latents, embeds, timesteps, guidance_scale, rng, callback,
                          hint=_doubled(hint, cfg, decoder.dtype, device),
                          blend=None if keep is None else _keeping(sched, image, noise, keep, timesteps))
        return latents if keep is None else keep * image + (1 - keep) * latents


@torch.no_grad()
def inpaint(decoder: DecoderBundle, positive: torch.Tensor, negative: torch.Tensor, *, latents: torch.Tensor,
            mask: torch.Tensor, steps: int = 50, guidance_scale: float = 4.0, seed: int = 0,
            scheduler: str = "default", load: Load = on_cpu, callback: StepCallback | None = None) -> torch.Tensor:
    """Repaint where ``mask`` [B, H, W] is 1, as KandinskyV22InpaintPipeline does, but blending every image
    of a batch with its own original (the reference blends only the first)."""
    mask = _check_mask(mask)
    batch, rng, sched = _prepare(decoder, positive, negative, steps, guidance_scale, scheduler, seed,
                                 latent=_check_latents(decoder, latents), mask=mask)
    latent_hw = tuple(latents.shape[-2:])
    keep = keep_mask(mask, pixel_size(latent_hw, decoder.movq_scale_factor), latent_hw)
    if not (keep < 1).any():
        log.warning("Kandinsky 2.2 inpaint: the mask repaints nothing (all zeros): the picture comes back as it was.")
    cfg = guidance_scale > 1
    with load(_cells(batch, latent_hw)) as device:
        image = fit_batch(latents, batch).to(device=device, dtype=decoder.dtype)
        keep = fit_batch(keep, batch).to(device=device, dtype=decoder.dtype)
        embeds = guidance_embeds(decoder, positive, negative, batch, 1, cfg, device)
        sched.set_timesteps(steps, device=device)
        timesteps = sched.timesteps
        noise = randn_tensor(image.shape, generator=rng, device=device, dtype=decoder.dtype)

        concat = _doubled(masked_image(image, keep), cfg, decoder.dtype, device)
        latents = denoise(decoder, sched, noise * sched.init_noise_sigma, embeds, timesteps, guidance_scale, rng,
                          callback, concat=concat, blend=_keeping(sched, image, noise, keep, timesteps))
        return keep * image + (1 - keep) * latents
