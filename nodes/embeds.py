"""Embedding nodes: blends of K22_EMBEDS."""
from ..kandinsky_core import KandinskyError
from ..kandinsky_core import embeds as embeds_stage
from . import comfy_bridge as bridge


def embeds_pair(i: int) -> dict:
    """Embeds Mix's i-th embedding and its weight."""
    return {
        f"embeds_{i}": ("K22_EMBEDS", {"tooltip": f"Embedding {i} (from Prior Encode, Image Encode, ...)."}),
        f"weight_{i}": ("FLOAT", {"default": 0.5 if i < 3 else 0.0, "min": -10.0, "max": 10.0, "step": 0.01,
                                  "tooltip": f"Weight of embedding {i}."}),
    }


class Kandinsky22EmbedsMix(bridge.KandinskyNode):
    CATEGORY = f"{bridge.CATEGORY}/embeds"
    RETURN_TYPES = ("K22_EMBEDS",)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = ("The mixed CLIP image embeddings: a decoder node's positive (or negative), or another mix's "
                       "input.",)
    DESCRIPTION = ("Blends 2 to 4 embeddings of texts and pictures. weighted_sum is the reference interpolate "
                   "(the plain sum of weight x embedding; weights summing to 1 keep the scale); slerp blends "
                   "along the sphere CLIP embeddings live on, with the weights as shares.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {**embeds_pair(1), **embeds_pair(2), "method": (list(embeds_stage.METHODS), {
                "default": "weighted_sum", "tooltip": "weighted_sum: the reference interpolate; slerp: "
                                                      "spherical blend, often smoother for two or more."})},
            "optional": {**embeds_pair(3), **embeds_pair(4)},
        }

    def run(self, embeds_1, weight_1, embeds_2, weight_2, method, embeds_3=None, weight_3=0.0, embeds_4=None,
            weight_4=0.0):
        pairs = [(embeds_1, weight_1), (embeds_2, weight_2), (embeds_3, weight_3), (embeds_4, weight_4)]
        given = [(f"embeds_{i}", e, float(w)) for i, (e, w) in enumerate(pairs, 1) if e is not None]
        names, embeds, weights = zip(*given)
        return (embeds_stage.mix(list(embeds), list(weights), method, list(names)).to(bridge.out_device()),)


class Kandinsky22CLIPVisionEmbeds(bridge.KandinskyNode):
    CATEGORY = f"{bridge.CATEGORY}/embeds"
    RETURN_TYPES = ("K22_EMBEDS",)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = ("The CLIP vision output as Kandinsky 2.2 image embeddings: a decoder node's positive, or a "
                       "mix's input.",)
    DESCRIPTION = ("Turns the output of ComfyUI's CLIP Vision Encode into Kandinsky 2.2 embeddings. Use a ViT-bigG "
                   "clip_vision model (the image encoder Kandinsky 2.2 was trained with); ComfyUI preprocesses "
                   "pictures a little differently from Kandinsky 2.2 Image Encode.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_vision_output": ("CLIP_VISION_OUTPUT", {
            "tooltip": "From CLIP Vision Encode with a ViT-bigG clip_vision model."})}}

    def run(self, clip_vision_output):
        embeds = getattr(clip_vision_output, "image_embeds", None)
        if embeds is None or embeds.ndim != 2:
            raise KandinskyError("clip_vision_output holds no image embeddings: wire in CLIP Vision Encode's output.")
        return (embeds.float().to(bridge.out_device()),)
