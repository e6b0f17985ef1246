"""The prior stage: text -> CLIP image embeddings, as diffusers' KandinskyV22PriorPipeline computes them."""
from __future__ import annotations

import logging
from typing import Callable

import torch
from diffusers import UnCLIPScheduler
from diffusers.utils.torch_utils import randn_tensor

from .errors import KandinskyError
from .loading import PriorBundle

log = logging.getLogger(__name__)

StepCallback = Callable[[int, int, torch.Tensor], None]  # (step index, step count, current sample)


def _encode_text(bundle: PriorBundle, prompts: list[str], uncond: list[str] | None, repeat: int, cfg: bool,
                 device: torch.device):
    """(text embeds, hidden states, attention mask), the unconditional half first when cfg."""
    tokenizer = bundle.tokenizer

    def encode(texts):
        tokens = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                           truncation=True, return_tensors="pt")
        out = bundle.text_encoder(tokens.input_ids.to(device))
        mask = tokens.attention_mask.bool().to(device)
        return [x.repeat_interleave(repeat, dim=0) for x in (out.text_embeds, out.last_hidden_state, mask)]

    for text in prompts:
        if len(tokenizer(text).input_ids) > tokenizer.model_max_length:
            log.warning("Kandinsky 2.2: prompt longer than CLIP's %d tokens was truncated: %r",
                        tokenizer.model_max_length, text)
    cond = encode(prompts)
    if not cfg:
        return cond
    return [torch.cat([u, c]) for u, c in zip(encode(uncond or [""] * len(prompts)), cond)]


@torch.no_grad()
def zero_embeds(bundle: PriorBundle, batch_size: int, device: torch.device) -> torch.Tensor:
    """The image embedding of an all-zero picture: the reference's negative when there is no negative prompt."""
    size = bundle.image_encoder.config.image_size
    zeros = torch.zeros(1, 3, size, size, device=device, dtype=bundle.image_encoder.dtype)
    return bundle.image_encoder(zeros)["image_embeds"].repeat(batch_size, 1)


@torch.no_grad()
def text_to_embeds(bundle: PriorBundle, prompt: str, negative_prompt: str = "", *, guidance_scale: float = 4.0,
                   steps: int = 25, seed: int = 0, batch_size: int = 1, device: torch.device | str = "cpu",
                   callback: StepCallback | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) embeddings ``[batch_size, D]``.

    An empty negative prompt means none: the negative is the zero-image embedding. A negative prompt is
    sampled beside the prompt in one batch and also serves as their unconditional text, as the reference does.
    """
    if steps < 2:
        raise KandinskyError(f"steps is {steps}: the prior's scheduler needs at least 2 steps.")
    if batch_size < 1:
        raise KandinskyError(f"batch_size is {batch_size}: it must be 1 or more.")
    device = torch.device(device)
    prompts, uncond = [prompt], None
    if negative_prompt:
        prompts, uncond = [prompt, negative_prompt], [negative_prompt] * 2
    cfg = guidance_scale > 1
    embeds, hidden, mask = _encode_text(bundle, prompts, uncond, batch_size, cfg, device)

    scheduler = UnCLIPScheduler.from_config(bundle.scheduler_config)
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps
    generator = torch.Generator("cpu").manual_seed(seed)
    shape = (len(prompts) * batch_size, bundle.prior.config.embedding_dim)
    latents = randn_tensor(shape, generator=generator, device=device, dtype=embeds.dtype)
    latents = latents * scheduler.init_noise_sigma
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
    latents = bundle.prior.post_process_latents(latents)
    if negative_prompt:
        return tuple(latents.chunk(2))
    return latents, zero_embeds(bundle, latents.shape[0], device)
