"""Prior nodes: prompts -> CLIP image embeddings (K22_EMBEDS)."""
from ..kandinsky_core import prior as prior_stage
from . import comfy_bridge as bridge

PRIOR_INPUT = ("K22_PRIOR", {"tooltip": "From Kandinsky 2.2 Prior Loader."})

PROMPT = ("STRING", {"multiline": True, "default": "", "tooltip":
          "What to paint. CLIP reads at most 77 tokens; the rest is cut off."})
POSITIVE_NEGATIVE = ("The prompt's CLIP image embeddings: a decode node's positive.",
                     "The negative prompt's embeddings (the empty picture's when it is empty): a decode node's "
                     "negative.")
SEED = ("INT", {"default": 0, "min": 0, "max": bridge.SEED_MAX, "tooltip": "Seed of the noise (CPU generator)."})


def loaded(prior, image_encoder: bool = True):
    """The prior's models on ComfyUI's device; the image encoder (for picture embeddings and the zero one) when
    asked."""
    encoders = [prior.text_encoder, prior.image_encoder] if image_encoder else [prior.text_encoder]
    return bridge.loaded(prior.prior, *encoders)


def outputs(embeds) -> tuple:
    return tuple(e.to(bridge.out_device()) for e in embeds)


def prior_inputs() -> dict:
    """The prior's inputs after prompt (and image, strength), in the node contract's order."""
    return {
        "negative_prompt": ("STRING", {"multiline": True, "default": "", "tooltip":
                            "What to avoid (77 tokens at most). Empty means none: the negative is then the "
                            "embedding of an empty picture."}),
        "guidance_scale": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip":
                           "How strongly the prior follows the prompt; 1 or less turns guidance off."}),
        "steps": ("INT", {"default": 25, "min": 2, "max": 1000, "tooltip": "Prior denoising steps (at least 2)."}),
        "seed": SEED,
        "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Embeddings to make."}),
    }


class Kandinsky22PriorEncode(bridge.K22Node):
    CATEGORY = f"{bridge.CATEGORY}/prior"
    RETURN_TYPES = ("K22_EMBEDS", "K22_EMBEDS")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = POSITIVE_NEGATIVE
    DESCRIPTION = ("Turns a prompt into the CLIP image embedding the decoder paints from (the first of Kandinsky "
                   "2.2's two stages). negative is the embedding of the negative prompt, or of an empty picture "
                   "when the negative prompt is empty.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"prior": PRIOR_INPUT, "prompt": PROMPT, **prior_inputs()}}

    def run(self, prior, prompt, negative_prompt, guidance_scale, steps, seed, batch_size):
        with loaded(prior, prior_stage.needs_image_encoder(prior, negative_prompt)) as dev:
            return outputs(prior_stage.text_to_embeds(
                prior, prompt, negative_prompt, guidance_scale=guidance_scale, steps=steps, seed=seed,
                batch_size=batch_size, device=dev, callback=bridge.step_callback(steps)))


class Kandinsky22PriorEmb2Emb(bridge.K22Node):
    CATEGORY = f"{bridge.CATEGORY}/prior"
    RETURN_TYPES = ("K22_EMBEDS", "K22_EMBEDS")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = POSITIVE_NEGATIVE
    DESCRIPTION = ("Moves a picture's CLIP embedding towards a prompt: the picture's embedding is noised to "
                   "strength and denoised by the prior. With strength 1 and the negative prior prompt as prompt, "
                   "its positive serves as a decoder's negative.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "prior": PRIOR_INPUT, "prompt": PROMPT,
            "image": ("IMAGE", {"tooltip": "The picture whose embedding is the starting point; a batch of pictures "
                                            "gives batch_size embeddings for each."}),
            "strength": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                         "How far the prompt moves the picture's embedding: low keeps it, 1 ignores it. strength x "
                         "steps must reach 1, so that at least one step runs."}),
            **prior_inputs()}}

    def run(self, prior, prompt, image, strength, negative_prompt, guidance_scale, steps, seed, batch_size):
        with loaded(prior) as dev:
            return outputs(prior_stage.emb2emb(
                prior, prompt, bridge.image_to_bchw(image), strength, negative_prompt,
                guidance_scale=guidance_scale, steps=steps, seed=seed, batch_size=batch_size, device=dev,
                callback=bridge.step_callback(steps)))


class Kandinsky22ImageEncode(bridge.K22Node):
    CATEGORY = f"{bridge.CATEGORY}/embeds"
    RETURN_TYPES = ("K22_EMBEDS",)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = ("The picture's CLIP image embedding (one per picture of the batch).",)
    DESCRIPTION = ("The CLIP image embedding of a picture (the prior's own image encoder): mix it with text "
                   "embeddings, or paint variations of the picture from it.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"prior": PRIOR_INPUT, "image": ("IMAGE", {"tooltip": "The picture(s) to encode."})}}

    def run(self, prior, image):
        with bridge.loaded(prior.image_encoder) as dev:
            return outputs([prior_stage.image_to_embeds(prior, bridge.image_to_bchw(image), dev)])

