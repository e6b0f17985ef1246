"""MoVQ nodes: pixels <-> Kandinsky 2.2 latents."""
import math

import torch

from ..kandinsky_core import movq as movq_stage
from . import comfy_bridge as bridge
from . import inputs


def in_batches(movq, fn, x: torch.Tensor, latent_hw) -> torch.Tensor:
    """``fn(movq, part, device)`` over ``x`` in parts that fit ComfyUI's free memory, as its VAE nodes split a
    batch: the MoVQ works at full resolution, so a batch of large pictures may not fit at once."""
    per_item = bridge.activation_bytes(math.prod(latent_hw), next(movq.parameters()).dtype, bridge.MOVQ_ACTIVATIONS)
    with bridge.loaded(movq, memory_required=per_item) as dev:
        size = bridge.items_that_fit(per_item, movq, dev)
        return torch.cat([fn(movq, x[i:i + size], dev).to(bridge.out_device()) for i in range(0, len(x), size)])


class Kandinsky22MoVQEncode(bridge.KandinskyNode):
    CATEGORY = f"{bridge.CATEGORY}/movq"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The picture's MoVQ latents, for Image to Image, Inpaint and ControlNet Image to Image.",)
    DESCRIPTION = ("Encodes a picture into Kandinsky 2.2 MoVQ latents (for image-to-image and inpainting). "
                   "Sizes off the MoVQ's grid (64 px for the real model) are resized up to it; MoVQ Decode gives "
                   "them back at their own size.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"movq": inputs.MOVQ, "image": inputs.image("The picture to encode.")}}

    def run(self, movq, image):
        pixels = bridge.image_to_bchw(image)
        latent_hw = movq_stage.latent_size(*pixels.shape[-2:], movq_stage.downscale(movq))
        latents = in_batches(movq, movq_stage.encode, pixels, latent_hw)
        return (bridge.make_latent(latents, size=pixels.shape[-2:]),)


class Kandinsky22MoVQDecode(bridge.KandinskyNode):
    CATEGORY = f"{bridge.CATEGORY}/movq"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The picture.",)
    DESCRIPTION = ("Decodes Kandinsky 2.2 MoVQ latents into a picture; latents of a picture MoVQ Encode stretched up "
                   "to the grid come back at that picture's size.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"movq": inputs.MOVQ, "latent": (
            "LATENT", {"tooltip": "Latents of a Kandinsky 2.2 decoder node or MoVQ Encode."})}}

    def run(self, movq, latent):
        samples = movq_stage.check_latents(bridge.latent_samples(latent), movq.config.latent_channels, "this MoVQ")
        pixels = in_batches(movq, movq_stage.decode, samples, samples.shape[-2:])
        size = latent.get(bridge.SIZE_KEY)  # a picture off the grid comes back at its own size
        return (bridge.bchw_to_image(movq_stage.restore_size(pixels, size, samples.shape[-2:])),)
