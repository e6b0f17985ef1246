"""Prior nodes: prompts -> CLIP image embeddings (K22_EMBEDS)."""
from ..kandinsky_core import prior as prior_stage
from . import comfy_bridge as bridge

SEED = ("INT", {"default": 0, "min": 0, "max": bridge.SEED_MAX, "tooltip": "Seed of the noise (CPU generator)."})


class Kandinsky22PriorEncode(bridge.K22Node):
    CATEGORY = f"{bridge.CATEGORY}/prior"
    RETURN_TYPES = ("K22_EMBEDS", "K22_EMBEDS")
    RETURN_NAMES = ("positive", "negative")
    DESCRIPTION = ("Turns a prompt into the CLIP image embedding the decoder paints from (the first of Kandinsky "
                   "2.2's two stages). negative is the embedding of the negative prompt, or of an empty picture "
                   "when the negative prompt is empty.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "prior": ("K22_PRIOR", {"tooltip": "From Kandinsky 2.2 Prior Loader."}),
            "prompt": ("STRING", {"multiline": True, "default": "", "tooltip":
                       "What to paint. CLIP reads at most 77 tokens; the rest is cut off."}),
            "negative_prompt": ("STRING", {"default": "", "tooltip":
                                "What to avoid (77 tokens at most). Empty means none: the negative is then the "
                                "embedding of an empty picture."}),
            "guidance_scale": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip":
                               "How strongly the prior follows the prompt; 1 or less turns guidance off."}),
            "steps": ("INT", {"default": 25, "min": 2, "max": 1000, "tooltip":
                      "Prior denoising steps (at least 2)."}),
            "seed": SEED,
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Embeddings to make."}),
        }}

    def run(self, prior, prompt, negative_prompt, guidance_scale, steps, seed, batch_size):
        dev = bridge.to_device(prior.prior, prior.text_encoder, prior.image_encoder)
        positive, negative = prior_stage.text_to_embeds(
            prior, prompt, negative_prompt, guidance_scale=guidance_scale, steps=steps, seed=seed,
            batch_size=batch_size, device=dev, callback=bridge.step_callback(steps))
        return positive.to(bridge.out_device()), negative.to(bridge.out_device())

