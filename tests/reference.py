"""diffusers' own pipelines on the tiny weights: the reference every parity test compares with.

Each call gets a fresh CPU generator, as each node seeds its own."""
from __future__ import annotations

import functools

import numpy as np
import torch
import diffusers

from tiny_models import NAMES


PIPELINES = {"prior": "KandinskyV22PriorPipeline", "emb2emb": "KandinskyV22PriorEmb2EmbPipeline",
             "text2img": "KandinskyV22Pipeline",
             "img2img": "KandinskyV22Img2ImgPipeline", "inpaint": "KandinskyV22InpaintPipeline",
             "controlnet": "KandinskyV22ControlnetPipeline",
             "controlnet_img2img": "KandinskyV22ControlnetImg2ImgPipeline"}
FOLDERS = {"img2img": "text2img", "controlnet_img2img": "controlnet", "emb2emb": "prior"}


@functools.lru_cache(maxsize=None)
def pipeline(models_dir, mode: str):
    """The diffusers pipeline of ``mode`` on the tiny model folder it uses."""
    cls = getattr(diffusers, PIPELINES[mode])
    pipe = cls.from_pretrained(f"{models_dir}/{NAMES[FOLDERS.get(mode, mode)]}")
    # diffusers' documented speed-up, and the decoder loader's layout on the CPU, where the tests run (the parity
    # tests' decoders load so too)
    if hasattr(pipe, "unet"):
        pipe.unet.to(memory_format=torch.channels_last)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def prior(models_dir, prompt, negative_prompt="", guidance_scale=4.0, steps=5, seed=0, batch_size=1):
    """(positive, negative): an empty negative prompt is passed as None, the node's meaning of empty."""
    out = pipeline(models_dir, "prior")(
        prompt, negative_prompt=negative_prompt or None, guidance_scale=guidance_scale, num_inference_steps=steps,
        generator=generator(seed), num_images_per_prompt=batch_size)
    return out.image_embeds, out.negative_image_embeds


def txt2img(models_dir, positive, negative, width, height, steps=4, guidance_scale=4.0, seed=0, batch_size=1):
    """Pixels [B, H, W, 3] in 0..1, as output_type='np' gives them."""
    return pipeline(models_dir, "text2img")(
        image_embeds=positive, negative_image_embeds=negative, width=width, height=height,
        num_inference_steps=steps, guidance_scale=guidance_scale, generator=generator(seed),
        num_images_per_prompt=batch_size, output_type="np").images


def decoder_pipeline(models_dir, mode, positive, negative, seed=0, **kwargs):
    """Pixels [B, H, W, 3] in 0..1 from the decoder pipeline of ``mode``."""
    return pipeline(models_dir, mode)(image_embeds=positive, negative_image_embeds=negative,
                                      generator=generator(seed), output_type="np", **kwargs).images


COMBINED = {"text2img": "KandinskyV22CombinedPipeline", "img2img": "KandinskyV22Img2ImgCombinedPipeline",
            "inpaint": "KandinskyV22InpaintCombinedPipeline"}


def combined(models_dir, mode: str, prompt: str, seed: int = 0, **kwargs):
    """Pixels [B, H, W, 3] in 0..1 from diffusers' combined pipeline of ``mode`` (prior, decoder and MoVQ in one call,
    one generator for both stages), on the prior's and the decoder's tiny folders."""
    prior, decoder = pipeline(models_dir, "prior"), pipeline(models_dir, FOLDERS.get(mode, mode))
    pipe = getattr(diffusers, COMBINED[mode])(
        unet=decoder.unet, scheduler=decoder.scheduler, movq=decoder.movq,
        **{f"prior_{name}": part for name, part in prior.components.items()})
    pipe.set_progress_bar_config(disable=True)
    return pipe(prompt, generator=generator(seed), output_type="np", **kwargs).images


def max_diff(a, b) -> float:
    a, b = (np.asarray(x.detach().float() if isinstance(x, torch.Tensor) else x) for x in (a, b))
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def schedule_sigmas(models_dir, kind: str = "text2img") -> torch.Tensor:
    """sqrt((1 - alphas_cumprod) / alphas_cumprod) of the decoder's own scheduler config, in diffusers' reading."""
    scheduler = diffusers.DDPMScheduler.from_pretrained(f"{models_dir}/{NAMES[kind]}", subfolder="scheduler")
    cumprod = scheduler.alphas_cumprod.double()
    return ((1 - cumprod) / cumprod).sqrt()


@torch.no_grad()
def euler(models_dir, positive, negative, noise, steps: int, cfg: float, kind: str = "text2img") -> torch.Tensor:
    """The diffusers UNet driven by Euler's update over ComfyUI's "normal" sigmas of the decoder's schedule
    (timesteps evenly spaced from the last to the first, log-sigma interpolated between table entries, then 0), from
    ``noise`` scaled to the first sigma, with classifier-free guidance on the noise prediction."""
    log_table = schedule_sigmas(models_dir, kind).log().float()
    times = torch.linspace(len(log_table) - 1, 0, steps, dtype=torch.float64)
    low, high = times.floor().long(), times.ceil().long()
    weight = (times - low).float()
    sigmas = [*((1 - weight) * log_table[low] + weight * log_table[high]).exp().tolist(), 0.0]
    unet = pipeline(models_dir, kind).unet
    x = noise * (1 + sigmas[0] ** 2) ** 0.5
    for sigma, following in zip(sigmas, sigmas[1:]):
        t = (log_table - np.log(sigma)).abs().argmin().float()  # the nearest step of the table, as ComfyUI's
        scaled = x / (sigma ** 2 + 1) ** 0.5
        uncond, cond = (unet(scaled, t, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": e}).sample[:, :4]
                        for e in (negative, positive))
        x = x + (uncond + cfg * (cond - uncond)) * (following - sigma)
    return x
