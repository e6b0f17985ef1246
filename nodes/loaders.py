"""Loader nodes: pick a Kandinsky 2.2 model folder (or hub id) and load it."""
import torch

from ..kandinsky_core import loading
from . import comfy_bridge as bridge
from . import inputs, native

OWN_ENCODER = "from the prior"


class _Loader(bridge.KandinskyNode):
    FAMILY = ""
    FOLDER = "diffusers"
    CATEGORY = f"{bridge.CATEGORY}/loaders"

    @classmethod
    def model_input(cls) -> dict:
        return {"model": (loading.list_models(bridge.model_roots(cls.FOLDER), cls.FAMILY), {"tooltip": (
            f"A {cls.FAMILY} model folder under models/{cls.FOLDER}, or a hub id: owner/name lives in "
            f"models/{cls.FOLDER}/name and is downloaded there once if missing.")})}

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {**cls.model_input(), "dtype": inputs.DTYPE}}

    @classmethod
    def VALIDATE_INPUTS(cls, model):
        # Our own check instead of ComfyUI's bare "Value not in list".
        roots = bridge.model_roots(cls.FOLDER)
        if model in loading.list_models(roots, cls.FAMILY):
            return True
        return f"{cls.__name__}: model '{model}' was not found; {loading.search_help(model, roots)}"

    def resolve(self, model, dtype=torch.float32):
        """The model's folder; a hub id not on disk is fetched in fp16 files for an fp16 load."""
        return loading.resolve(model, bridge.model_roots(self.FOLDER), self.FAMILY, half=dtype == torch.float16)


class Kandinsky22PriorLoader(_Loader):
    FAMILY = loading.PRIOR
    RETURN_TYPES = ("K22_PRIOR",)
    RETURN_NAMES = ("prior",)
    OUTPUT_TOOLTIPS = ("The prior: for Prior Encode, Prior Emb2Emb and Image Encode.",)
    DESCRIPTION = ("Loads the Kandinsky 2.2 prior (CLIP ViT-bigG text and image encoders and the diffusion prior) "
                   "that turns prompts and pictures into CLIP image embeddings.")

    @classmethod
    def INPUT_TYPES(cls):
        types = super().INPUT_TYPES()
        types["optional"] = {"image_encoder": ([OWN_ENCODER, *bridge.clip_vision_files()], {
            "default": OWN_ENCODER, "tooltip": "Where picture embeddings come from: the prior's own image encoder, "
                                               "or a ViT-bigG file from models/clip_vision (safetensors)."})}
        return types

    def run(self, model, dtype, image_encoder=OWN_ENCODER):
        choice, dtype = dtype, bridge.dtype_for(dtype)
        prior = loading.load_prior(self.resolve(model, dtype), dtype)
        if image_encoder != OWN_ENCODER:
            prior.image_encoder = loading.image_encoder_from(prior, bridge.clip_vision_weights(image_encoder),
                                                             f"models/clip_vision/{image_encoder}")
        for encoder in (prior.text_encoder, prior.image_encoder):  # the big ones: fp8 where chosen
            bridge.store(encoder, choice)
        return (bridge.own(prior, prior.prior, prior.text_encoder, prior.image_encoder),)


class Kandinsky22DecoderLoader(_Loader):
    FAMILY = loading.DECODER
    RETURN_TYPES = ("K22_DECODER", "K22_MOVQ", "MODEL", "VAE")
    RETURN_NAMES = ("decoder", "movq", "model", "vae")
    OUTPUT_TOOLTIPS = ("The decoder UNet, for the decoder nodes of its kind.",
                       "The MoVQ autoencoder, for MoVQ Encode and MoVQ Decode.",
                       "The same UNet as a ComfyUI MODEL, for KSampler (with Kandinsky 2.2 Conditioning).",
                       "The same MoVQ as a ComfyUI VAE, for VAEDecode, VAEEncode and their tiled and inpaint kin.")
    DESCRIPTION = ("Loads a Kandinsky 2.2 decoder (text-to-image, inpaint or ControlNet depth UNet) and the MoVQ "
                   "autoencoder that comes with it, for this pack's decoder nodes and, as MODEL and VAE (one copy "
                   "of the weights), for ComfyUI's KSampler and VAE nodes.")

    @classmethod
    def INPUT_TYPES(cls):
        types = super().INPUT_TYPES()
        types["optional"] = {
            "channels_last": ("BOOLEAN", {"default": False, "tooltip":
                              "Run the UNet in channels_last memory format: faster on many GPUs. On the CPU (and "
                              "with ComfyUI's --force-channels-last) it always does: 12-17 % faster there."}),
            "compile": ("BOOLEAN", {"default": False, "tooltip":
                        "torch.compile the UNet (CUDA only): the first run compiles for minutes, later runs are "
                        "faster."}),
        }
        return types

    def run(self, model, dtype, channels_last=False, compile=False):
        choice, dtype = dtype, bridge.dtype_for(dtype)
        how = (self.resolve(model, dtype), dtype, choice, bool(channels_last) or bridge.channels_last(), bool(compile),
               bridge.previews_on())
        decoder, movq = load_decoder(*how)
        model, vae = native.native(decoder, movq)
        model.cached_patcher_init = (fresh_model, how)  # for ComfyUI's deep clones (0.38 on)
        vae.patcher.cached_patcher_init = (fresh_vae, how[:2])
        return decoder, movq, model, vae  # ComfyUI keeps or drops a node's outputs together


def load_decoder(folder, dtype, choice, channels_last, compile, previews):
    """The decoder and MoVQ computing in ``dtype``, the UNet's weights stored as the loader's dtype ``choice`` says
    (fp8, or as computed). On the CPU the channels_last copy waits for the UNet's first call, so the load reads no
    weight; elsewhere ComfyUI moves the weights (and under dynamic VRAM, manages them) before that call."""
    decoder, movq = loading.load_decoder(folder, dtype, previews, channels_last, at_first_call=bridge.on_cpu())
    decoder.unet = loading.speed_up(bridge.store(decoder.unet, choice), compile)
    return decoder, movq


def fresh_model(*how, disable_dynamic=False):
    """A new MODEL, loaded as the Decoder Loader loaded the one it came from: ComfyUI's deep clones, which need new
    weights (0.38's clone(force_deepcopy=True), its multi-GPU clones), call it through the patcher's
    ``cached_patcher_init``, which passes ``disable_dynamic`` on to the patcher it makes."""
    return native.model_patcher(load_decoder(*how)[0], disable_dynamic)


def fresh_vae(folder, dtype, disable_dynamic=False):
    """The VAE's patcher anew, with a MoVQ of its own, as ``fresh_model`` the MODEL's (0.38's Select VAE Device deep
    clones it onto another GPU)."""
    return native.vae_patcher(loading.load_movq(folder, dtype), disable_dynamic)


class Kandinsky22DepthLoader(_Loader):
    FAMILY = loading.DEPTH
    FOLDER = bridge.DEPTH_FOLDER
    RETURN_TYPES = ("K22_DEPTH_MODEL",)
    RETURN_NAMES = ("depth_model",)
    OUTPUT_TOOLTIPS = ("The depth-estimation model, for Depth Hint.",)
    DESCRIPTION = ("Loads a transformers depth-estimation model (such as Intel/dpt-large) from "
                   "models/depth_estimation, for Kandinsky 2.2 Depth Hint.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": cls.model_input()}

    def run(self, model):
        depth = loading.load_depth(self.resolve(model))
        return (bridge.own(depth, depth.model),)
