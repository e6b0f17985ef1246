"""MoVQ nodes: pixels <-> Kandinsky 2.2 latents."""
from ..kandinsky_core import movq as movq_stage
from . import comfy_bridge as bridge


def loaded(movq, batch: int, height: int, width: int):
    """The MoVQ on ComfyUI's device, with room for its full-resolution activations."""
    area = batch * height * width // movq_stage.scale_factor(movq) ** 2
    return bridge.loaded(movq, memory_required=bridge.activation_bytes(area, next(movq.parameters()).dtype, 4.0))


class Kandinsky22MoVQEncode(bridge.K22Node):
    CATEGORY = f"{bridge.CATEGORY}/movq"
    RETURN_TYPES = ("LATENT",)
    DESCRIPTION = ("Encodes a picture into Kandinsky 2.2 MoVQ latents (for image-to-image and inpainting). "
                   "Sizes off the MoVQ's grid (64 px for the real model) are resized up to it.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "movq": ("K22_MOVQ", {"tooltip": "From Kandinsky 2.2 Decoder Loader."}),
            "image": ("IMAGE", {"tooltip": "The picture to encode."}),
        }}

    def run(self, movq, image):
        pixels = bridge.image_to_bchw(image)
        with loaded(movq, pixels.shape[0], *pixels.shape[-2:]) as dev:
            return (bridge.make_latent(movq_stage.encode(movq, pixels, dev)),)


class Kandinsky22MoVQDecode(bridge.K22Node):
    CATEGORY = f"{bridge.CATEGORY}/movq"
    RETURN_TYPES = ("IMAGE",)
    DESCRIPTION = "Decodes Kandinsky 2.2 MoVQ latents into a picture."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "movq": ("K22_MOVQ", {"tooltip": "From Kandinsky 2.2 Decoder Loader."}),
            "latent": ("LATENT", {"tooltip": "Latents of a Kandinsky 2.2 decode node or MoVQ Encode."}),
        }}

    def run(self, movq, latent):
        samples = movq_stage.check_latents(movq, bridge.latent_samples(latent))
        factor = movq_stage.scale_factor(movq)
        with loaded(movq, samples.shape[0], samples.shape[-2] * factor, samples.shape[-1] * factor) as dev:
            return (bridge.bchw_to_image(movq_stage.decode(movq, samples, dev)),)

