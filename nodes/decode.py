"""Decode nodes: CLIP image embeddings -> MoVQ latents (LATENT), one node per Kandinsky 2.2 decoder pipeline."""
import math

import torch

from ..kandinsky_core import KandinskyError, movq, sampling, schedulers
from ..kandinsky_core.loading import CONTROLNET, HUB_ID_FOR_KIND, INPAINT, TEXT2IMG
from . import comfy_bridge as bridge
from .prior import SEED

SIZE_TOOLTIP = "{} in pixels; rounded up to the MoVQ's grid (64 px for the real model)."
DECODER_HELP = {TEXT2IMG: "the text-to-image decoder (kandinsky-2-2-decoder)",
                INPAINT: "the inpaint decoder (kandinsky-2-2-decoder-inpaint)",
                CONTROLNET: "the ControlNet depth decoder (kandinsky-2-2-controlnet-depth)"}


def size_inputs() -> dict:
    return {name: ("INT", {"default": 768, "min": 64, "max": 4096, "step": 64,
                           "tooltip": SIZE_TOOLTIP.format(name.capitalize())}) for name in ("width", "height")}


def common_inputs() -> dict:
    """The inputs every decode node shares, in the order the node contract gives them."""
    return {
        "steps": ("INT", {"default": 50, "min": 1, "max": 999, "tooltip": "Decoder denoising steps."}),
        "guidance_scale": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip":
                           "How strongly the picture follows positive over negative; 1 or less turns it off."}),
        "seed": SEED,
        "scheduler": (schedulers.NAMES, {"default": "default", "tooltip":
                      "default is the model's own DDPM scheduler (the diffusers result); the others need "
                      "fewer steps (about 20)."}),
    }


def batch_input() -> dict:
    return {"batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Pictures per embedding."})}


def strength_input(default: float) -> dict:
    return {"strength": ("FLOAT", {"default": default, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                         "How much of the picture is repainted: 0 keeps it, 1 paints anew."})}


def embeds_inputs(kind: str) -> dict:
    return {
        "decoder": ("K22_DECODER", {"tooltip": f"From Kandinsky 2.2 Decoder Loader: {DECODER_HELP[kind]}."}),
        "positive": ("K22_EMBEDS", {"tooltip": "Image embeddings to paint (from a prior or embeds node)."}),
        "negative": ("K22_EMBEDS", {"tooltip": "Image embeddings to steer away from (a prior's negative)."}),
    }


LATENT_INPUT = ("LATENT", {"tooltip": "The picture to start from, from Kandinsky 2.2 MoVQ Encode."})
HINT_INPUT = ("IMAGE", {"tooltip": "The depth hint: Kandinsky 2.2 Depth Hint, or any depth map (white = near); "
                                   "resized to the output size."})


class _Decode(bridge.K22Node):
    """A decode node: checks the decoder's kind, runs one kandinsky_core sampler, returns a LATENT."""
    KIND = TEXT2IMG
    CATEGORY = f"{bridge.CATEGORY}/decode"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("Kandinsky 2.2 MoVQ latents: Kandinsky 2.2 MoVQ Decode turns them into a picture.",)

    def decode(self, sampler, decoder, steps: int, batch: int, /, size=None, picture=None, **inputs):
        """Run ``sampler`` with the UNet loaded, budgeting activations for ``batch`` latents: of the pixel
        ``size`` (height, width) for nodes that paint from noise, else of the input latents, whose LATENT
        ``picture`` passes on the size of the picture they came from."""
        kind = getattr(decoder, "kind", None)
        if kind != self.KIND:
            hub_id = HUB_ID_FOR_KIND[self.KIND]
            found = f"the {kind} decoder" if kind else f"not a Kandinsky 2.2 decoder ({type(decoder).__name__})"
            raise KandinskyError(f"decoder is {found} but this node needs the {self.KIND} decoder: load '{hub_id}' "
                                 f"(the folder models/diffusers/{hub_id.split('/')[1]}) in Kandinsky 2.2 Decoder "
                                 f"Loader.")
        if size is not None:
            inputs["latent_hw"] = movq.latent_size(*size, decoder.movq_scale_factor)
        latent_hw = inputs["latent_hw"] if size is not None else inputs["latents"].shape[-2:]
        need = bridge.activation_bytes(2 * batch * math.prod(latent_hw), decoder.dtype)  # both guidance halves
        with bridge.loaded(decoder.unet, memory_required=need) as dev:
            samples = sampler(decoder, steps=steps, device=dev, **inputs,
                              callback=bridge.step_callback(steps, decoder.preview_factors))
        return (bridge.make_latent(samples, size=picture.get(bridge.SIZE_KEY) if picture else None),)


def largest_batch(*tensors) -> int:
    """The largest batch among the inputs, for the memory estimate (the sampler checks them properly)."""
    return max([t.shape[0] for t in tensors if isinstance(t, torch.Tensor) and t.ndim] or [1])


class Kandinsky22Txt2Img(_Decode):
    DESCRIPTION = ("Paints MoVQ latents from noise, guided by image embeddings (the second of Kandinsky 2.2's "
                   "stages). Decode them to pixels with Kandinsky 2.2 MoVQ Decode.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {**embeds_inputs(TEXT2IMG), **size_inputs(), **common_inputs(), **batch_input()}}

    def run(self, decoder, positive, negative, width, height, steps, guidance_scale, seed, scheduler, batch_size):
        return self.decode(sampling.txt2img, decoder, steps, largest_batch(positive, negative) * batch_size,
                           size=(height, width), positive=positive, negative=negative, guidance_scale=guidance_scale,
                           seed=seed, scheduler=scheduler, batch_size=batch_size)


class Kandinsky22Img2Img(_Decode):
    DESCRIPTION = ("Repaints a picture (its MoVQ latents) towards image embeddings; strength sets how much "
                   "changes. A batch of one picture or one embedding serves a batch of the other.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {**embeds_inputs(TEXT2IMG), "latent": LATENT_INPUT, **strength_input(0.3),
                             **common_inputs()}}

    def run(self, decoder, positive, negative, latent, strength, steps, guidance_scale, seed, scheduler):
        latents = bridge.latent_samples(latent)
        return self.decode(sampling.img2img, decoder, steps, largest_batch(positive, latents),
                           picture=latent, positive=positive, negative=negative, latents=latents, strength=strength,
                           guidance_scale=guidance_scale, seed=seed, scheduler=scheduler)


class Kandinsky22Inpaint(_Decode):
    KIND = INPAINT
    DESCRIPTION = ("Repaints the masked part of a picture (mask 1 = repaint, as ComfyUI's masks) with the inpaint "
                   "decoder; the rest stays as it was.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            **embeds_inputs(INPAINT), "latent": LATENT_INPUT,
            "mask": ("MASK", {"tooltip": "1 (white) = repaint, 0 = keep; resized to the picture's size. "
                                         "LoadImage's mask of a picture without alpha is all 0: nothing changes."}),
            **common_inputs()}}

    def run(self, decoder, positive, negative, latent, mask, steps, guidance_scale, seed, scheduler):
        latents, mask = bridge.latent_samples(latent), bridge.as_mask(mask)
        return self.decode(sampling.inpaint, decoder, steps, largest_batch(positive, latents, mask),
                           picture=latent, positive=positive, negative=negative, latents=latents, mask=mask,
                           guidance_scale=guidance_scale, seed=seed, scheduler=scheduler)


class Kandinsky22ControlNet(_Decode):
    KIND = CONTROLNET
    DESCRIPTION = "Paints from noise like Text to Image, following the shapes of a depth hint (ControlNet depth)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {**embeds_inputs(CONTROLNET), "hint": HINT_INPUT, **size_inputs(), **common_inputs(),
                             **batch_input()}}

    def run(self, decoder, positive, negative, hint, width, height, steps, guidance_scale, seed, scheduler,
            batch_size):
        return self.decode(sampling.txt2img, decoder, steps, largest_batch(positive, negative, hint) * batch_size,
                           size=(height, width), positive=positive, negative=negative,
                           hint=bridge.image_to_bchw(hint, "hint"), guidance_scale=guidance_scale, seed=seed,
                           scheduler=scheduler, batch_size=batch_size)


class Kandinsky22ControlNetImg2Img(_Decode):
    KIND = CONTROLNET
    DESCRIPTION = "Repaints a picture like Image to Image, following the shapes of a depth hint (ControlNet depth)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {**embeds_inputs(CONTROLNET), "latent": LATENT_INPUT, "hint": HINT_INPUT,
                             **strength_input(0.5), **common_inputs()}}

    def run(self, decoder, positive, negative, latent, hint, strength, steps, guidance_scale, seed, scheduler):
        latents = bridge.latent_samples(latent)
        return self.decode(sampling.img2img, decoder, steps, largest_batch(positive, latents, hint),
                           picture=latent, positive=positive, negative=negative, latents=latents,
                           hint=bridge.image_to_bchw(hint, "hint"), strength=strength,
                           guidance_scale=guidance_scale, seed=seed, scheduler=scheduler)
