"""Kandinsky 2.2 as a ComfyUI model family, beside the parity nodes: the decoder UNet as a MODEL, the MoVQ as a VAE
and image embeddings as CONDITIONING, so that KSampler and ComfyUI's sampler, guider, latent and VAE nodes work with
it. Built as ComfyUI builds its own families (comfy/model_base.py, supported_models.py, latent_formats.py, sd.py's
VAE) around the very modules the loader made: one copy of the weights, one patcher each."""
from __future__ import annotations

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.sd
import comfy.supported_models_base
import comfy.utils
import torch
from comfy.patcher_extension import WrapperExecutor, WrappersMP, get_all_wrappers

from ..kandinsky_core import KandinskyError, sampling
from ..kandinsky_core.errors import describe
from ..kandinsky_core.loading import CONTROLNET, INPAINT, DecoderBundle
from ..kandinsky_core.movq import check_latents, downscale
from . import comfy_bridge as bridge
from . import inputs

HINT_KEY = "kandinsky22_hint"  # CONDITIONING key: the ControlNet hint [B, 3, H, W] in 0..1
ONLY_KEY = "kandinsky22"  # model_conds key every Kandinsky 2.2 CONDITIONING carries (see KandinskyOnly)
# diffusers' beta_schedule -> ComfyUI's name for it: diffusers' "linear" spaces the betas evenly, which ComfyUI calls
# "sqrt_linear"; ComfyUI's "linear" spaces their square roots, diffusers' "scaled_linear".
BETA_SCHEDULES = {"linear": "sqrt_linear", "scaled_linear": "linear", "squaredcos_cap_v2": "squaredcos_cap_v2"}
MODEL = "Kandinsky 2.2 MODEL"  # how the model's errors name it (the sampler node is not known to it)
NOT_OURS = "wire in the positive and negative of Kandinsky 2.2 Conditioning"


class Kandinsky22Latent(comfy.latent_formats.LatentFormat):
    """MoVQ latents as the decoder takes them (scale 1); the preview colours are fitted to the loaded MoVQ."""
    scale_factor = 1.0
    latent_channels = 4
    latent_dimensions = 2
    latent_rgb_factors = None
    latent_rgb_factors_bias = None
    taesd_decoder_name = None


class Kandinsky22Config(comfy.supported_models_base.BASE):
    """The model config ComfyUI detects from a checkpoint for its own families, made here from the decoder."""
    unet_extra_config = {}  # BASE's default adds SD's attention settings
    latent_format = Kandinsky22Latent
    memory_usage_factor = 2.0

    def __init__(self, decoder: DecoderBundle):
        unet, schedule = decoder.unet, decoder.scheduler_config
        # model_channels: FreeU and HyperTile read it
        super().__init__({"disable_unet_model_creation": True, "in_channels": unet.config.in_channels,
                          "model_channels": unet.config.block_out_channels[0]})
        beta_schedule = schedule.get("beta_schedule", "linear")
        if beta_schedule not in BETA_SCHEDULES or schedule.get("prediction_type", "epsilon") != "epsilon":
            raise KandinskyError(f"this decoder's scheduler ({beta_schedule} betas, {schedule.get('prediction_type')} "
                                 f"prediction) has no ComfyUI counterpart: use the Kandinsky 2.2 decoder nodes.")
        self.sampling_settings = {"beta_schedule": BETA_SCHEDULES[beta_schedule],
                                  "linear_start": schedule.get("beta_start", 0.0001),
                                  "linear_end": schedule.get("beta_end", 0.02),
                                  "timesteps": schedule.get("num_train_timesteps", 1000)}
        self.latent_format.latent_channels = decoder.latent_channels  # the loaded MoVQ's
        factors = decoder.preview_factors
        self.latent_format.latent_rgb_factors = None if factors is None else factors.tolist()


class CONDHint(comfy.conds.CONDRegular):
    """A pixel-space condition: an area (in latent cells) crops it at 8 pixels a cell."""

    def process_cond(self, batch_size, area=None, **kwargs):
        data = self.cond
        if area is not None and len(area) == 4:
            h, w, y, x = (int(v) * 8 for v in area)
            data = data[:, :, y:y + h, x:x + w]
        return self._copy_with(comfy.utils.repeat_to_batch_size(data, batch_size))


class KandinskyOnly(comfy.conds.CONDConstant):
    """Rides in a Kandinsky 2.2 CONDITIONING: the Kandinsky MODEL replaces it, any other model meets it when its
    sampler reads the conditioning, before its network sees embeddings it cannot take."""

    def __init__(self):
        super().__init__(True)

    def process_cond(self, *args, **kwargs):
        raise KandinskyError("Kandinsky 2.2 Conditioning's output reached a model that is not Kandinsky 2.2: wire the "
                             "sampler's model input to the MODEL of Kandinsky 2.2 Decoder Loader.")


class DiffusersUNet(torch.nn.Module):
    """The ``diffusion_model`` call ComfyUI makes, around the diffusers UNet (as comfy/ldm's PixArt and HunyuanDiT
    drop their networks' learned variance)."""

    def __init__(self, decoder: DecoderBundle):
        super().__init__()
        self.unet = decoder.unet
        self.channels = decoder.latent_channels
        self.dtype = decoder.dtype  # BaseModel.get_dtype reads it: what the UNet computes in (its weights may be fp8)

    def forward(self, x, timesteps, context=None, y=None, control=None, transformer_options={}, **kwargs):
        patches = sorted({n for key in ("patches", "patches_replace") for n in transformer_options.get(key) or {}})
        if patches:
            raise KandinskyError(f"{MODEL}: it carries ComfyUI UNet patches ({', '.join(patches)}: FreeU, "
                                 f"SAG, PAG, HyperTile and the like patch ComfyUI's own UNet code, which a diffusers "
                                 f"UNet does not run): remove the model-patching node.")
        # As ComfyUI's UNet does (same arguments, y unused): the model's DIFFUSION_MODEL wrappers (EasyCache) run
        # around the call.
        wrappers = get_all_wrappers(WrappersMP.DIFFUSION_MODEL, transformer_options)
        return WrapperExecutor.new_class_executor(self._forward, self, wrappers).execute(
            x, timesteps, context, y, control, transformer_options, **kwargs)

    def _forward(self, x, timesteps, context, y, control, transformer_options, hint=None, **kwargs):
        return sampling.predict_noise(self.unet, x, timesteps, context[:, 0], self.channels, hint)


class Kandinsky22Model(comfy.model_base.BaseModel):
    """The decoder as a ComfyUI model: epsilon prediction over the decoder's own noise schedule. The ControlNet
    decoder's hint and the inpaint decoder's extra channels come from the conditioning (``extra_conds``)."""

    def __init__(self, decoder: DecoderBundle):
        super().__init__(Kandinsky22Config(decoder), comfy.model_base.ModelType.EPS)
        self.diffusion_model = DiffusersUNet(decoder)
        self.kind, self.movq_scale = decoder.kind, decoder.movq_scale_factor
        self.width = decoder.unet.config.encoder_hid_dim  # of the image embeddings

    def extra_conds(self, **kwargs):
        which, channels = kwargs.get("prompt_type", "the"), kwargs["noise"].shape[1]
        if channels != self.latent_format.latent_channels:
            raise KandinskyError(f"{MODEL}: the latent has {channels} channels but Kandinsky 2.2 takes "
                                 f"{self.latent_format.latent_channels}: start from EmptyLatentImage, or encode the "
                                 f"picture with the Decoder Loader's VAE.")
        if ONLY_KEY not in kwargs.get("model_conds", {}):
            raise KandinskyError(f"{MODEL}: the {which} conditioning is not Kandinsky 2.2's (text conditioning from "
                                 f"CLIPTextEncode, say): {NOT_OURS}.")
        embeds = kwargs.get("cross_attn")
        if not isinstance(embeds, torch.Tensor) or embeds.ndim != 3 or embeds.shape[1:] != (1, self.width):
            raise KandinskyError(f"{MODEL}: the {which} conditioning holds {describe(embeds)} but this "
                                 f"decoder takes embeddings [batch, 1, {self.width}]: use the prior that belongs to it "
                                 f"(Kandinsky 2.2), and join embeddings with ConditioningAverage, not Concat.")
        if kwargs.get("control") is not None:
            raise KandinskyError(f"{MODEL}: the {which} conditioning carries a Stable Diffusion ControlNet, which "
                                 f"Kandinsky 2.2 cannot take: give the ControlNet decoder its hint through "
                                 f"Kandinsky 2.2 Conditioning instead.")
        hint = kwargs.get(HINT_KEY)
        if hint is None and self.kind == CONTROLNET:
            raise KandinskyError(f"{MODEL}: the ControlNet decoder needs a hint in both conditionings: wire a depth "
                                 f"hint into Kandinsky 2.2 Conditioning.")
        if hint is not None and self.kind != CONTROLNET:
            raise KandinskyError(f"{MODEL}: the {which} conditioning has a ControlNet hint but this is the {self.kind} "
                                 f"decoder: load the ControlNet depth decoder, or take the hint out of Kandinsky 2.2 "
                                 f"Conditioning.")
        out = super().extra_conds(**kwargs)  # c_crossattn
        out[ONLY_KEY] = comfy.conds.CONDConstant(True)
        if hint is not None:
            pixel_hw = tuple(n * self.movq_scale for n in kwargs["noise"].shape[-2:])
            out["hint"] = CONDHint(sampling.prepare_hint(hint, pixel_hw, len(hint)))
        if self.kind == INPAINT:
            out["c_concat"] = comfy.conds.CONDNoiseShape(self.inpaint_channels(**kwargs))
        return out

    def inpaint_channels(self, noise, device, latent_image=None, concat_latent_image=None, concat_mask=None,
                         denoise_mask=None, **kwargs) -> torch.Tensor:
        """The reference's ``[masked_image, mask]`` from InpaintModelConditioning or a LATENT's noise_mask. The
        picture is the latents being sampled (InpaintModelConditioning's LATENT: the original, as the reference
        encodes it), or, when they are empty, the conditioning's grey-filled picture."""
        b, _, h, w = noise.shape
        mask = concat_mask if concat_mask is not None else denoise_mask  # 1 = repaint, pixel or latent size
        if mask is None:
            raise KandinskyError(f"{MODEL}: the inpaint decoder needs a mask: use InpaintModelConditioning, "
                                 "SetLatentNoiseMask or VAEEncodeForInpaint.")
        image = latent_image if latent_image is not None and latent_image.any() else concat_latent_image
        image = torch.zeros_like(noise) if image is None else image
        if image.shape[-2:] != noise.shape[-2:]:
            image = comfy.utils.common_upscale(image, w, h, "bilinear", "center")
        mask = bridge.mask_bhw(mask)
        keep = sampling.keep_mask(mask, (h * self.movq_scale, w * self.movq_scale), (h, w))
        image, keep = (comfy.utils.resize_to_batch_size(x, b).to(device, torch.float32) for x in (image, keep))
        return sampling.masked_image(image, keep)

    def memory_required(self, input_shape, *args, **kwargs):
        return bridge.activation_bytes(input_shape[0] * input_shape[2] * input_shape[3], self.get_dtype())


class MoVQCoder(torch.nn.Module):
    """The MoVQ with the encode and decode ComfyUI's VAE calls (pixels in -1..1); its patcher's model, as a ComfyUI
    VAE's first_stage_model is (0.38's Select VAE Device decodes with the patcher's model)."""

    def __init__(self, movq):
        super().__init__()
        self.movq = movq

    def encode(self, x):
        return self.movq.encode(x).latents

    def decode(self, z, **kwargs):
        check_latents(z, self.movq.config.latent_channels, "the Kandinsky 2.2 VAE (MoVQ)")
        return self.movq.decode(z, force_not_quantize=True).sample


# The smallest autoencoder ComfyUI's VAE builds from a state dict: one number (comfy/pixel_space_convert.py).
PLACEHOLDER = {"pixel_space_vae": torch.tensor(1.0)}


class Kandinsky22VAE(comfy.sd.VAE):
    """The MoVQ as ComfyUI's VAE. ComfyUI's own construction runs first (on a one-number placeholder), so the VAE has
    every attribute the running ComfyUI's VAE sets, those of later releases too; then the MoVQ is put in. Its methods,
    the tiled ones included, are ComfyUI's."""

    def __init__(self, movq):
        patcher = bridge.patcher(movq)  # the one K22_MOVQ loads with
        dtype = next(movq.parameters()).dtype
        super().__init__(sd=dict(PLACEHOLDER), device=patcher.load_device, dtype=dtype)
        self.first_stage_model, self.patcher, self.size = patcher.model, patcher, None
        self.disable_offload = False  # it may load in part, as ComfyUI's image VAEs (0.38's placeholder may not)
        self.working_dtypes = [dtype, torch.float32]
        self.downscale_ratio = self.upscale_ratio = downscale(movq)
        self.latent_channels = movq.config.latent_channels
        cells = self.downscale_ratio ** 2  # pixels per latent cell

        def memory(latent_area, dtype):
            return bridge.activation_bytes(latent_area, dtype, bridge.MOVQ_ACTIVATIONS)

        self.memory_used_encode = lambda shape, dtype: memory(shape[2] * shape[3] // cells, dtype)
        self.memory_used_decode = lambda shape, dtype: memory(shape[2] * shape[3], dtype)
        # In place, and returned: ComfyUI since 2026-03 (PR #13028) decodes into a preallocated buffer and drops the
        # return value; earlier releases keep it. process_input stays ComfyUI's own, which must not write into the
        # IMAGE it is given (a view of another node's output).
        self.process_output = lambda image: image.add_(1.0).div_(2.0).clamp_(0.0, 1.0)


def model_patcher(decoder: DecoderBundle, disable_dynamic: bool = False):
    return bridge.make_patcher(Kandinsky22Model(decoder), disable_dynamic)


def vae_patcher(movq, disable_dynamic: bool = False):
    return bridge.make_patcher(MoVQCoder(movq).eval(), disable_dynamic)


def native(decoder: DecoderBundle, movq) -> tuple:
    """The loader's MODEL and VAE, whose patchers are the UNet's and the MoVQ's one patchers."""
    model, coder = model_patcher(decoder), vae_patcher(movq)
    bridge.own(decoder, decoder.unet, movq, made={decoder.unet: model, movq: coder})
    return model, Kandinsky22VAE(movq)


class Kandinsky22Conditioning(bridge.KandinskyNode):
    CATEGORY = f"{bridge.CATEGORY}/conditioning"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = ("For KSampler's positive, with the Decoder Loader's MODEL.",
                       "For KSampler's negative, with the Decoder Loader's MODEL.")
    DESCRIPTION = ("Turns Kandinsky 2.2 image embeddings (and the ControlNet decoder's hint) into CONDITIONING, for "
                   "KSampler and ComfyUI's conditioning nodes with the Decoder Loader's MODEL. ConditioningAverage "
                   "blends embeddings as Embeds Mix does.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"positive": inputs.POSITIVE, "negative": inputs.NEGATIVE},
                "optional": {"hint": (inputs.HINT[0], {"tooltip": "Only for the ControlNet depth decoder: " +
                                                                  inputs.HINT[1]["tooltip"]})}}

    def run(self, positive, negative, hint=None):
        extra = {} if hint is None else {HINT_KEY: bridge.image_to_bchw(hint, "hint").to(bridge.out_device())}
        return tuple([[sampling.check_embeds(name, embeds)[:, None].float().to(bridge.out_device()),
                       {**extra, "model_conds": {ONLY_KEY: KandinskyOnly()}}]]
                     for name, embeds in (("positive", positive), ("negative", negative)))
