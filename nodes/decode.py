"""Decode nodes: CLIP image embeddings -> MoVQ latents (LATENT)."""
from ..kandinsky_core import KandinskyError, movq, sampling, schedulers
from ..kandinsky_core.loading import HUB_ID_FOR_KIND, TEXT2IMG
from . import comfy_bridge as bridge
from .prior import SEED

SIZE_TOOLTIP = "{} in pixels; rounded up to the MoVQ's grid (64 px for the real model)."


def common_inputs() -> dict:
    """The inputs every decode node shares, in the order the node contract gives them."""
    return {
        "steps": ("INT", {"default": 50, "min": 1, "max": 1000, "tooltip": "Decoder denoising steps."}),
        "guidance_scale": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip":
                           "How strongly the picture follows positive over negative; 1 or less turns it off."}),
        "seed": SEED,
        "scheduler": (schedulers.NAMES, {"default": "default", "tooltip":
                      "default is the model's own DDPM scheduler (the diffusers result); the others need "
                      "fewer steps (about 20)."}),
    }


def embeds_inputs(kind_help: str) -> dict:
    return {
        "decoder": ("K22_DECODER", {"tooltip": f"From Kandinsky 2.2 Decoder Loader: {kind_help}."}),
        "positive": ("K22_EMBEDS", {"tooltip": "Image embeddings to paint (from a prior or embeds node)."}),
        "negative": ("K22_EMBEDS", {"tooltip": "Image embeddings to steer away from (a prior's negative)."}),
    }


def check_kind(decoder, kind: str) -> None:
    if getattr(decoder, "kind", None) != kind:
        raise KandinskyError(
            f"decoder is a {getattr(decoder, 'kind', 'unknown')} decoder but this node needs a {kind} decoder: "
            f"load '{HUB_ID_FOR_KIND[kind]}' in Kandinsky 2.2 Decoder Loader.")


class Kandinsky22Txt2Img(bridge.K22Node):
    CATEGORY = f"{bridge.CATEGORY}/decode"
    RETURN_TYPES = ("LATENT",)
    DESCRIPTION = ("Paints MoVQ latents from noise, guided by image embeddings (the second of Kandinsky 2.2's "
                   "stages). Decode them to pixels with Kandinsky 2.2 MoVQ Decode.")

    @classmethod
    def INPUT_TYPES(cls):
        common = common_inputs()
        return {"required": {
            **embeds_inputs("the text-to-image decoder (kandinsky-2-2-decoder)"),
            "width": ("INT", {"default": 768, "min": 64, "max": 4096, "step": 64, "tooltip": SIZE_TOOLTIP.format("Width")}),
            "height": ("INT", {"default": 768, "min": 64, "max": 4096, "step": 64, "tooltip": SIZE_TOOLTIP.format("Height")}),
            **common,
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip":
                           "Pictures per embedding."}),
        }}

    def run(self, decoder, positive, negative, width, height, steps, guidance_scale, seed, scheduler, batch_size):
        check_kind(decoder, TEXT2IMG)
        latent_hw = movq.latent_size(height, width, decoder.movq_scale_factor)
        dev = bridge.to_device(decoder.unet)
        samples = sampling.txt2img(
            decoder, positive, negative, latent_hw=latent_hw, steps=steps, guidance_scale=guidance_scale,
            seed=seed, batch_size=batch_size, scheduler=scheduler, device=dev, callback=bridge.step_callback(steps))
        return (bridge.make_latent(samples),)
