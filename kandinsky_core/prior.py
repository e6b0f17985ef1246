"""The prior stage: text -> CLIP image embeddings, as diffusers' KandinskyV22PriorPipeline computes them."""
from __future__ import annotations

import logging

import torch
from diffusers import UnCLIPScheduler
from diffusers.utils.torch_utils import randn_tensor

from .errors import KandinskyError
from .loading import PriorBundle
from .schedulers import StepCallback, check_guidance, generator, start_step

log = logging.getLogger(__name__)


def _encode_text(bundle: PriorBundle, prompts: list[str], uncond: list[str] | None, repeat: int, cfg: bool,
                 device: torch.device):
    """(text embeds, hidden states, attention mask), the unconditional half first when cfg: the prior pipelines'
    ``_encode_prompt``, with the prompts ``repeat`` times each."""
    tokenizer = bundle.tokenizer

    def encode(texts):
        tokens = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                           truncation=True, return_tensors="pt")
        out = bundle.text_encoder(tokens.input_ids.to(device))
        mask = tokens.attention_mask.bool().to(device)
        return [x.repeat_interleave(repeat, dim=0) for x in (out.text_embeds, out.last_hidden_state, mask)]

    for text in prompts:
        if len(tokenizer(text, verbose=False).input_ids) > tokenizer.model_max_length:
            log.warning("Kandinsky 2.2: prompt longer than CLIP's %d tokens was truncated: %r",
                        tokenizer.model_max_length, text)
    cond = encode(prompts)
    if not cfg:
        return cond
    return [torch.cat([u, c]) for u, c in zip(encode(uncond or [""] * len(prompts)), cond)]


@torch.no_grad()
def zero_embeds(bundle: PriorBundle, batch_size: int, device: torch.device) -> torch.Tensor:
    """The image embedding of an all-zero picture, the prior pipelines' ``get_zero_embed``: the reference's negative
    when there is no negative prompt. Made once per bundle, so that later prompts need no image encoder (a ViT-bigG:
    3.7 GB in fp16)."""
    if bundle.zero_embed is None:
        size = bundle.image_encoder.config.image_size
        zeros = torch.zeros(1, 3, size, size, device=device, dtype=bundle.image_encoder.dtype)
        bundle.zero_embed = bundle.image_encoder(zeros)["image_embeds"].cpu()
    return bundle.zero_embed.to(device).repeat(batch_size, 1)


def needs_image_encoder(bundle: PriorBundle, negative_prompt: str) -> bool:
    """Whether text_to_embeds will run the image encoder: for the zero embedding, until it is made."""
    return not negative_prompt and bundle.zero_embed is None


def check(steps: int, batch_size: int, guidance_scale: float, seed: int, strength: float | None = None) -> None:
    """The checks of text_to_embeds (and, with ``strength``, emb2emb): cheap, so that a caller can run them before
    it loads the models."""
    check_guidance(guidance_scale)
    if steps < 2:
        raise KandinskyError(f"steps is {steps}: the prior's scheduler needs at least 2 steps.")
    if batch_size < 1:
        raise KandinskyError(f"batch_size is {batch_size}: it must be 1 or more.")
    generator(seed)
    if strength is not None and start_step(steps, strength) == steps:
        raise KandinskyError(f"strength {strength} with {steps} steps runs no step: raise strength or steps.")


def _prompts(prompt: str, negative_prompt: str):
    """The prompts sampled together and their unconditional texts: a negative prompt is sampled beside the
    prompt and serves as both their unconditional text, as the reference does; empty means none."""
    if negative_prompt:
        return [prompt, negative_prompt], [negative_prompt] * 2
    return [prompt], None


def _denoise(bundle: PriorBundle, scheduler, latents, timesteps, text, guidance_scale, generator, callback):
    """The prior pipelines' loop over ``timesteps`` (the UnCLIP scheduler told each step's successor), then the
    embedding back in CLIP's scale (``post_process_latents``)."""
    embeds, hidden, mask = text
    cfg = guidance_scale > 1
    for i, t in enumerate(timesteps):
        model_input = torch.cat([latents] * 2) if cfg else latents
        pred = bundle.prior(model_input, timestep=t, proj_embedding=embeds, encoder_hidden_states=hidden,
                            attention_mask=mask).predicted_image_embedding
        if cfg:
            uncond_pred, cond_pred = pred.chunk(2)
            pred = uncond_pred + guidance_scale * (cond_pred - uncond_pred)
        prev = timesteps[i + 1] if i + 1 < len(timesteps) else None
        latents = scheduler.step(pred, timestep=t, sample=latents, generator=generator,
                                 prev_timestep=prev).prev_sample
        if callback is not None:
            callback(i, len(timesteps), latents)
    return bundle.prior.post_process_latents(latents)


def _split(bundle: PriorBundle, latents, negative_prompt: str, device):
    if negative_prompt:
        return tuple(latents.chunk(2))
    return latents, zero_embeds(bundle, latents.shape[0], device)


def _scheduler(bundle: PriorBundle, steps: int, device):
    scheduler = UnCLIPScheduler.from_config(bundle.scheduler_config)
    scheduler.set_timesteps(steps, device=device)
    return scheduler


@torch.no_grad()
def text_to_embeds(bundle: PriorBundle, prompt: str, negative_prompt: str = "", *, guidance_scale: float = 4.0,
                   steps: int = 25, seed: int = 0, batch_size: int = 1, device: torch.device | str = "cpu",
                   callback: StepCallback | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) embeddings ``[batch_size, D]``, as KandinskyV22PriorPipeline makes them.
    An empty negative prompt means none: the negative is then the zero-image embedding."""
    check(steps, batch_size, guidance_scale, seed)
    rng = generator(seed)
    device = torch.device(device)
    prompts, uncond = _prompts(prompt, negative_prompt)
    text = _encode_text(bundle, prompts, uncond, batch_size, guidance_scale > 1, device)
    scheduler = _scheduler(bundle, steps, device)
    shape = (len(prompts) * batch_size, bundle.prior.config.embedding_dim)
    latents = randn_tensor(shape, generator=rng, device=device, dtype=text[0].dtype)
    latents = latents * scheduler.init_noise_sigma
    latents = _denoise(bundle, scheduler, latents, scheduler.timesteps, text, guidance_scale, rng, callback)
    return _split(bundle, latents, negative_prompt, device)


def to_uint8_pictures(images: torch.Tensor) -> list:
    """[B, 3, H, W] floats in 0..1 -> PIL pictures, the uint8 input the reference's processors get."""
    from PIL import Image

    pixels = (images.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(p) for p in pixels]


@torch.no_grad()
def image_to_embeds(bundle: PriorBundle, images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """CLIP image embeddings ``[B, D]`` of pictures [B, 3, H, W] in 0..1, through the prior's own image
    processor and encoder: the reference's PIL path (``interpolate``'s pictures, Emb2Emb's ``_encode_image``)."""
    device = torch.device(device)
    pixel_values = bundle.image_processor(to_uint8_pictures(images), return_tensors="pt").pixel_values
    return bundle.image_encoder(pixel_values.to(device=device, dtype=bundle.image_encoder.dtype))["image_embeds"]


@torch.no_grad()
def emb2emb(bundle: PriorBundle, prompt: str, images: torch.Tensor, strength: float = 0.3,
            negative_prompt: str = "", *, guidance_scale: float = 4.0, steps: int = 25, seed: int = 0,
            batch_size: int = 1, device: torch.device | str = "cpu",
            callback: StepCallback | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) from a picture's embedding noised to ``strength`` and denoised towards the prompt,
    as KandinskyV22PriorEmb2EmbPipeline does. ``images`` [N, 3, H, W] in 0..1 give ``N * batch_size`` rows, each
    picture's ``batch_size`` together (the reference with the prompt given once per picture)."""
    check(steps, batch_size, guidance_scale, seed, strength)
    rng = generator(seed)
    first = start_step(steps, strength)
    device = torch.device(device)
    image_embeds = image_to_embeds(bundle, images, device).repeat_interleave(batch_size, dim=0)
    prompts, uncond = _prompts(prompt, negative_prompt)
    text = _encode_text(bundle, prompts, uncond, image_embeds.shape[0], guidance_scale > 1, device)
    scheduler = _scheduler(bundle, steps, device)
    timesteps = scheduler.timesteps[first:]
    latents = image_embeds.repeat(len(prompts), 1).to(text[0].dtype)  # the same pictures for the negative prompt
    noise = randn_tensor(latents.shape, generator=rng, device=device, dtype=latents.dtype)
    latents = scheduler.add_noise(latents, noise, timesteps[:1].repeat(latents.shape[0]))
    latents = _denoise(bundle, scheduler, latents, timesteps, text, guidance_scale, rng, callback)
    return _split(bundle, latents, negative_prompt, device)
