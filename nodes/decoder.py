"""Decoder nodes: CLIP image embeddings -> MoVQ latents (LATENT), one node per Kandinsky 2.2 decoder pipeline."""
import torch

from ..kandinsky_core import KandinskyError, sampling
from ..kandinsky_core.loading import CONTROLNET, DECODER_HUB_IDS, INPAINT, TEXT2IMG, home
from ..kandinsky_core.schedulers import resumed
from . import comfy_bridge as bridge
from . import inputs


class _DecoderNode(bridge.KandinskyNode):
    """A decoder node: checks the decoder's kind, runs one kandinsky_core sampler, returns a LATENT."""
    KIND = TEXT2IMG
    CATEGORY = f"{bridge.CATEGORY}/decode"  # the group name NODES.md gives
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("Kandinsky 2.2 MoVQ latents: Kandinsky 2.2 MoVQ Decode turns them into a picture.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": cls.required(), "optional": {"noise": inputs.NOISE}}

    def sample(self, sampler, decoder, steps: int, latent: dict | None = None, noise=None, **kwargs) -> tuple:
        """Run ``sampler`` (from the samples of ``latent``, when given) with the UNet loaded by ComfyUI's manager once
        the inputs are checked; the output LATENT is made from ``latent``. ``noise``, a prior's, replaces the seed."""
        kind = getattr(decoder, "kind", None)
        if kind != self.KIND:
            hub_id = DECODER_HUB_IDS[self.KIND]
            found = f"the {kind} decoder" if kind else f"not a Kandinsky 2.2 decoder ({type(decoder).__name__})"
            raise KandinskyError(f"decoder is {found} but this node needs the {self.KIND} decoder: load '{hub_id}' "
                                 f"(the folder models/diffusers/{home(hub_id)}) in Kandinsky 2.2 Decoder Loader.")

        def load(cells: int):
            return bridge.loaded(decoder.unet, memory_required=bridge.activation_bytes(cells, decoder.dtype))

        if latent is not None:
            kwargs["latents"] = bridge.latent_samples(latent)
            mask = latent.get("noise_mask")  # SetLatentNoiseMask's: repaint only there, as KSampler does
            if isinstance(mask, torch.Tensor) and "mask" not in kwargs:
                kwargs["mask"] = bridge.mask_bhw(mask)
        if noise is not None:
            kwargs["seed"] = resumed(noise)
        callback = bridge.step_callback(steps, decoder.preview_factors)
        return (bridge.make_latent(sampler(decoder, steps=steps, load=load, callback=callback, **kwargs), latent),)


class Kandinsky22Txt2Img(_DecoderNode):
    DESCRIPTION = ("Paints MoVQ latents from noise, guided by image embeddings (the second of Kandinsky 2.2's "
                   "stages). Decode them to pixels with Kandinsky 2.2 MoVQ Decode.")

    @staticmethod
    def required() -> dict:
        return {**inputs.embeds_inputs(TEXT2IMG), **inputs.size_inputs(), **inputs.sampler_inputs(),
                "batch_size": inputs.BATCH}

    def run(self, decoder, positive, negative, width, height, steps, guidance_scale, seed, scheduler, batch_size,
            noise=None):
        return self.sample(sampling.txt2img, decoder, steps, noise=noise, positive=positive, negative=negative,
                           height=height, width=width, guidance_scale=guidance_scale, seed=seed, scheduler=scheduler,
                           batch_size=batch_size)


class Kandinsky22Img2Img(_DecoderNode):
    DESCRIPTION = ("Repaints a picture (its MoVQ latents) towards image embeddings; strength sets how much "
                   "changes. A batch of one picture or one embedding serves a batch of the other.")

    @staticmethod
    def required() -> dict:
        return {**inputs.embeds_inputs(TEXT2IMG), "latent": inputs.LATENT, **inputs.strength_input(0.3),
                **inputs.sampler_inputs()}

    def run(self, decoder, positive, negative, latent, strength, steps, guidance_scale, seed, scheduler, noise=None):
        return self.sample(sampling.img2img, decoder, steps, latent, noise=noise, positive=positive,
                           negative=negative, strength=strength, guidance_scale=guidance_scale, seed=seed,
                           scheduler=scheduler)


class Kandinsky22Inpaint(_DecoderNode):
    KIND = INPAINT
    DESCRIPTION = ("Repaints the masked part of a picture (mask 1 = repaint, as ComfyUI's masks) with the inpaint "
                   "decoder; the rest stays as it was.")

    @staticmethod
    def required() -> dict:
        return {
            **inputs.embeds_inputs(INPAINT), "latent": inputs.LATENT,
            "mask": ("MASK", {"tooltip": "1 (white) = repaint, 0 = keep; resized to the picture's size. "
                                         "LoadImage's mask of a picture without alpha is all 0: nothing changes."}),
            **inputs.sampler_inputs()}

    def run(self, decoder, positive, negative, latent, mask, steps, guidance_scale, seed, scheduler, noise=None):
        return self.sample(sampling.inpaint, decoder, steps, latent, noise=noise, positive=positive,
                           negative=negative, mask=bridge.as_mask(mask), guidance_scale=guidance_scale, seed=seed,
                           scheduler=scheduler)


class Kandinsky22ControlNet(_DecoderNode):
    KIND = CONTROLNET
    DESCRIPTION = "Paints from noise like Text to Image, following the shapes of a depth hint (ControlNet depth)."

    @staticmethod
    def required() -> dict:
        return {**inputs.embeds_inputs(CONTROLNET), "hint": inputs.HINT, **inputs.size_inputs(),
                **inputs.sampler_inputs(), "batch_size": inputs.BATCH}

    def run(self, decoder, positive, negative, hint, width, height, steps, guidance_scale, seed, scheduler,
            batch_size, noise=None):
        return self.sample(sampling.txt2img, decoder, steps, noise=noise, positive=positive, negative=negative,
                           height=height, width=width, hint=bridge.image_to_bchw(hint, "hint"),
                           guidance_scale=guidance_scale, seed=seed, scheduler=scheduler, batch_size=batch_size)


class Kandinsky22ControlNetImg2Img(_DecoderNode):
    KIND = CONTROLNET
    DESCRIPTION = "Repaints a picture like Image to Image, following the shapes of a depth hint (ControlNet depth)."

    @staticmethod
    def required() -> dict:
        return {**inputs.embeds_inputs(CONTROLNET), "latent": inputs.LATENT, "hint": inputs.HINT,
                **inputs.strength_input(0.5), **inputs.sampler_inputs()}

    def run(self, decoder, positive, negative, latent, hint, strength, steps, guidance_scale, seed, scheduler,
            noise=None):
        return self.sample(sampling.img2img, decoder, steps, latent, noise=noise, positive=positive,
                           negative=negative, hint=bridge.image_to_bchw(hint, "hint"), strength=strength,
                           guidance_scale=guidance_scale, seed=seed, scheduler=scheduler)
