"""Prior nodes: prompts -> CLIP image embeddings (K22_EMBEDS)."""
from ..kandinsky_core import prior as prior_stage
from ..kandinsky_core.schedulers import generator
from . import comfy_bridge as bridge
from . import inputs

def prior_models(prior, image_encoder: bool = True) -> list:
    """The prior's models a node runs: the image encoder only when asked (picture embeddings, the zero one)."""
    return [prior.prior, prior.text_encoder, *([prior.image_encoder] if image_encoder else [])]


def outputs(embeds, rng=None) -> tuple:
    """The embeddings on ComfyUI's output device, and the state of the generator they were drawn with."""
    return (*(e.to(bridge.out_device()) for e in embeds), *([rng.get_state()] if rng else []))


class _PriorNode(bridge.KandinskyNode):
    """A prior node: the embeddings of a prompt, and where its noise generator stopped."""
    CATEGORY = f"{bridge.CATEGORY}/prior"
    RETURN_TYPES = ("K22_EMBEDS", "K22_EMBEDS", "K22_NOISE")
    RETURN_NAMES = ("positive", "negative", "noise")
    OUTPUT_TOOLTIPS = (
        "The prompt's CLIP image embeddings: a decoder node's positive.",
        "The negative prompt's embeddings (the empty picture's when it is empty): a decoder node's negative.",
        "Where this run left its noise generator: wired into a decoder node's noise, the decoder draws on from there "
        "instead of from its own seed, as diffusers' combined pipelines do (one generator for both stages).")


class Kandinsky22PriorEncode(_PriorNode):
    DESCRIPTION = ("Turns a prompt into the CLIP image embedding the decoder paints from (the first of Kandinsky "
                   "2.2's two stages). negative is the embedding of the negative prompt, or of an empty picture "
                   "when the negative prompt is empty.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"prior": inputs.PRIOR, "prompt": inputs.PROMPT, **inputs.prior_inputs()}}

    def run(self, prior, prompt, negative_prompt, guidance_scale, steps, seed, batch_size):
        prior_stage.check(steps, batch_size, guidance_scale, seed)  # before any model loads
        rng = generator(seed)
        with bridge.loaded(*prior_models(prior, prior_stage.needs_image_encoder(prior, negative_prompt))) as dev:
            return outputs(prior_stage.text_to_embeds(
                prior, prompt, negative_prompt, guidance_scale=guidance_scale, steps=steps, seed=rng,
                batch_size=batch_size, device=dev, callback=bridge.step_callback(steps)), rng)


class Kandinsky22PriorEmb2Emb(_PriorNode):
    DESCRIPTION = ("Moves a picture's CLIP embedding towards a prompt: the picture's embedding is noised to "
                   "strength and denoised by the prior. With strength 1 and the negative prior prompt as prompt, "
                   "its positive serves as a decoder's negative.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "prior": inputs.PRIOR, "prompt": inputs.PROMPT,
            "image": inputs.image("The picture whose embedding is the starting point; a batch of pictures gives "
                                  "batch_size embeddings for each."),
            "strength": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                         "How far the prompt moves the picture's embedding: low keeps it, 1 ignores it. strength x "
                         "steps must reach 1, so that at least one step runs."}),
            **inputs.prior_inputs()}}

    def run(self, prior, prompt, image, strength, negative_prompt, guidance_scale, steps, seed, batch_size):
        pictures = bridge.image_to_bchw(image)  # the inputs checked before any model loads
        prior_stage.check(steps, batch_size, guidance_scale, seed, strength)
        rng = generator(seed)
        with bridge.loaded(*prior_models(prior)) as dev:
            return outputs(prior_stage.emb2emb(
                prior, prompt, pictures, strength, negative_prompt,
                guidance_scale=guidance_scale, steps=steps, seed=rng, batch_size=batch_size, device=dev,
                callback=bridge.step_callback(steps)), rng)


class Kandinsky22ImageEncode(bridge.KandinskyNode):
    CATEGORY = f"{bridge.CATEGORY}/embeds"
    RETURN_TYPES = ("K22_EMBEDS",)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = ("The picture's CLIP image embedding (one per picture of the batch).",)
    DESCRIPTION = ("The CLIP image embedding of a picture (the prior's own image encoder): mix it with text "
                   "embeddings, or paint variations of the picture from it.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"prior": inputs.PRIOR, "image": inputs.image("The picture(s) to encode.")}}

    def run(self, prior, image):
        pictures = bridge.image_to_bchw(image)  # checked before the encoder loads
        with bridge.loaded(prior.image_encoder) as dev:
            return outputs([prior_stage.image_to_embeds(prior, pictures, dev)])

