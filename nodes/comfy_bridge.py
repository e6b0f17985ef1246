"""Every touch of ComfyUI internals: model folders, devices and dtypes, the memory manager, progress and interrupt,
tensor layouts, and the node base class that names the node in every error."""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import weakref
from pathlib import Path

import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import comfy.utils
import folder_paths
import torch
from comfy.cli_args import LatentPreviewMethod, args
from comfy.patcher_extension import CallbacksMP
from PIL import Image

from ..kandinsky_core import KandinskyError
from ..kandinsky_core.errors import describe
from ..kandinsky_core.loading import DTYPES, FP8
from .inputs import WIRE_IN

CATEGORY = "Kandinsky 2.2"
SIZE_KEY = "kandinsky22_size"  # LATENT key: (height, width) of the picture MoVQ Encode encoded
PREVIEW_SIZE = args.preview_size  # a preview's longest side (--preview-size)


class KandinskyNode:
    """Base of every node: FUNCTION is ``run``, whose KandinskyErrors name the node (and what a bad input takes)."""
    FUNCTION = "run"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        run = cls.__dict__.get("run")
        if run is None:
            return

        @functools.wraps(run)
        def wrapped(self, *args, **kw):
            try:
                return run(self, *args, **kw)
            except KandinskyError as exc:
                raise KandinskyError(f"{cls.__name__}: {cls.explain(exc)}") from None

        cls.run = wrapped

    @classmethod
    def explain(cls, exc: KandinskyError) -> str:
        declared = {n: spec for group in cls.INPUT_TYPES().values() for n, spec in group.items()} if exc.about else {}
        fix = WIRE_IN.get(declared[exc.about][0]) if exc.about in declared else None
        return f"{str(exc).rstrip('.')}: {fix}." if fix else str(exc)


DEPTH_FOLDER = "depth_estimation"
# Appended, so that paths extra_model_paths.yaml gave this name before the pack loaded are kept.
folder_paths.add_model_folder_path(DEPTH_FOLDER, os.path.join(folder_paths.models_dir, DEPTH_FOLDER))


def provide_pictures(pictures: list[Path]) -> None:
    """Copy the pictures the shipped workflows load into ComfyUI's input folder (LoadImage reads only there), so that
    a workflow opened from the templates menu runs as it is; a file of the same name there is never overwritten.
    ComfyUI applies --input-directory before it loads custom nodes."""
    target = Path(folder_paths.get_input_directory())
    for picture in pictures:
        if not (target / picture.name).exists():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(picture, target / picture.name)


def model_roots(folder: str) -> list[str]:
    """Every models/<folder> path ComfyUI knows, extra_model_paths.yaml ones included."""
    return list(folder_paths.get_folder_paths(folder))


def clip_vision_files() -> list[str]:
    """The safetensors files in ComfyUI's models/clip_vision folders (pickles are never offered)."""
    return [f for f in folder_paths.get_filename_list("clip_vision") if f.endswith(".safetensors")]


def clip_vision_weights(name: str) -> dict:
    """A clip_vision file's weights in transformers' key names (ComfyUI converts open_clip files the same way)."""
    import comfy.clip_vision
    from safetensors.torch import load_file

    path = folder_paths.get_full_path("clip_vision", name) if name.endswith(".safetensors") else None
    if path is None:
        raise KandinskyError(f"image_encoder '{name}' is not a safetensors file in models/clip_vision: pick one "
                             f"from the list.")
    state_dict = load_file(path)
    if "visual.transformer.resblocks.0.attn.in_proj_weight" in state_dict:
        state_dict = comfy.clip_vision.convert_to_transformers(state_dict, "visual.")
    return state_dict


def out_device() -> torch.device:
    """Where results travel between nodes (the CPU, unless ComfyUI says otherwise)."""
    return mm.intermediate_device()


def dtype_for(choice: str) -> torch.dtype:
    """The dtype to compute in: ``auto`` (and fp8 storage) is ComfyUI's own choice for the device (so --force-fp32
    and friends hold); else as named."""
    if choice == "auto" or choice in FP8:
        return torch.float16 if mm.should_use_fp16(mm.get_torch_device()) else torch.float32
    if choice not in DTYPES:
        raise KandinskyError(f"dtype '{choice}' is unknown: pick one of auto, {', '.join([*DTYPES, *FP8])}.")
    return DTYPES[choice]


def channels_last() -> bool:
    """Whether convolution weights go channels_last whatever a loader says: where ComfyUI is told to
    (--force-channels-last) and where models run on the CPU, whose convolutions then skip a reorder of every weight
    at every call (the decoder's UNet steps took 12-17 % less time with 1 and 2 threads, tests/tools/benchmark.py)."""
    return mm.force_channels_last() or on_cpu()


def on_cpu() -> bool:
    """Whether models run on the CPU."""
    return mm.get_torch_device().type == "cpu"


class ModuleHolder(torch.nn.Module):
    """Holds any diffusers/transformers module for ComfyUI's ModelPatcher, which sets attributes such as
    ``device`` that are read-only properties on those modules."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module


# The layers of diffusers' and transformers' Kandinsky 2.2 models, and ComfyUI's cast-on-demand classes for them
# (comfy.ops): ComfyUI's partial loading, --lowvram and dynamic VRAM load, stream or leave on the offload device
# exactly these layers, casting the weights of those they left as each one runs.
COMFY_LAYERS = {torch.nn.Linear: comfy.ops.disable_weight_init.Linear,
                torch.nn.Conv2d: comfy.ops.disable_weight_init.Conv2d,
                torch.nn.ConvTranspose2d: comfy.ops.disable_weight_init.ConvTranspose2d,
                torch.nn.GroupNorm: comfy.ops.disable_weight_init.GroupNorm,
                torch.nn.LayerNorm: comfy.ops.disable_weight_init.LayerNorm,
                torch.nn.Embedding: comfy.ops.disable_weight_init.Embedding}


def comfy_layers(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with each of its layers of COMFY_LAYERS' types made ComfyUI's class for it, in place: a subclass of
    the same torch layer with the same weights, which runs as the torch layer does until ComfyUI marks it for
    casting."""
    for layer in module.modules():
        if type(layer) in COMFY_LAYERS:
            layer.__class__ = COMFY_LAYERS[type(layer)]
            if not hasattr(layer, "bias"):  # ComfyUI's Embedding reads a bias, which its own init sets to None
                layer.bias = None
    return module


# Layers whose weight dtype the model casts its input to (diffusers' ImageProjection, CLIP's patch embedding): they
# keep the compute dtype, or that input would be cast to fp8.
CASTS_INPUT_TO_ITS_WEIGHT = ("image_embeds", "patch_embedding")


def store(module: torch.nn.Module, choice: str) -> torch.nn.Module:
    """``module`` with the weights of its linear and convolution layers stored in the fp8 type ``choice`` names
    (unchanged for any other choice), in place: each such layer, one of ComfyUI's (comfy.ops), then casts its weights
    to the dtype of its input as it runs, as ComfyUI runs its own fp8 models."""
    if choice in FP8:
        for name, layer in comfy_layers(module).named_modules():
            if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)) and not name.endswith(CASTS_INPUT_TO_ITS_WEIGHT):
                layer.weight.data = layer.weight.data.to(FP8[choice])
                layer.comfy_cast_weights = True
    return module


def bare_weights(module: torch.nn.Module) -> list[tuple[torch.nn.Module, str]]:
    """(module, name) of the parameters and buffers that ComfyUI's partial load never moves: those of modules that
    have children (a prior's positional_embedding, clip_mean and clip_std, CLIP's class_embedding and position_ids,
    DPT's position_embeddings). All are small."""
    return [(m, name) for m in module.modules() if next(m.children(), None) is not None
            for name, _ in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]]


def place_bare_weights(patcher, device_to, *args, **kwargs) -> None:
    """ComfyUI calls this after each load (CallbacksMP.ON_LOAD): the bare weights go where the model runs, whole or
    partially loaded. Its unload moves the whole model back."""
    if device_to is not None:
        for m in {m for m, _ in bare_weights(patcher.model)}:
            m._apply(lambda t: t.to(device_to), recurse=False)  # torch's own move of a module's own tensors


def make_patcher(module: torch.nn.Module, disable_dynamic: bool = False):
    """ComfyUI's own patcher for ``module`` (a diffusers or transformers one in a holder, or a ComfyUI model),
    its layers made ComfyUI's: its manager loads it whole, or in part where it must. The class is the running
    ComfyUI's CoreModelPatcher (0.38 on: ModelPatcherDynamic under dynamic VRAM, as main.py sets it at start), read
    at each call, or ModelPatcher where it has none or where the caller asks for no dynamic one."""
    kind = comfy.model_patcher.ModelPatcher
    if not disable_dynamic:
        kind = getattr(comfy.model_patcher, "CoreModelPatcher", kind)
    patcher = kind(comfy_layers(module), load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())
    patcher.add_callback(CallbacksMP.ON_LOAD, place_bare_weights)
    return patcher


_patchers = weakref.WeakValueDictionary()  # id(module) -> its patcher, while a loader output holds it


def own(output, *modules: torch.nn.Module, made: dict | None = None):
    """Make the ModelPatchers through which ComfyUI's manager loads these modules, held by ``output`` (the loader's
    output) as ComfyUI's own MODEL and VAE outputs hold theirs: once ComfyUI drops the output, its own cleanup (weak
    references to the patchers) unloads and frees them. ``made`` maps a module to the patcher it already has (the
    MODEL's, for the UNet): a module has one patcher, or ComfyUI's manager would count it twice and unload one copy
    under the other."""
    made = made or {}
    output.patchers = [made.get(m) or make_patcher(ModuleHolder(m)) for m in modules]
    _patchers.update({id(m): p for m, p in zip(modules, output.patchers)})
    return output


def patcher(module: torch.nn.Module):
    if id(module) not in _patchers:
        raise KandinskyError("this model was not made by a Kandinsky 2.2 loader node: wire in a loader's output.")
    return _patchers[id(module)]


def _unload(patchers) -> None:
    """Unload these patchers and their clones (KSampler's, which share the model) from ComfyUI's manager."""
    models = [p.model for p in patchers]
    for i in reversed(range(len(mm.current_loaded_models))):
        if any(getattr(mm.current_loaded_models[i].model, "model", None) is m for m in models):
            mm.current_loaded_models.pop(i).model_unload()


MOVQ_ACTIVATIONS = 4.0  # the MoVQ works at full resolution: its activations per latent cell beside an SD UNet's


def activation_bytes(latent_area: int, dtype: torch.dtype, scale: float = 1.0) -> int:
    """Memory the activations of a run take beside the weights: ComfyUI's own estimate for an SD UNet of the
    same latent area (batch x height x width), times ``scale`` (more for the MoVQ, which works at full size)."""
    return int(latent_area * mm.dtype_size(dtype) / 50 * 1024 * 1024 * scale)


def items_that_fit(per_item: int, module: torch.nn.Module, dev: torch.device) -> int:
    """How many items of ``per_item`` activation bytes fit at once (at least 1) in the free memory ComfyUI counts for
    this model: its patcher's count where it has one (0.38 on: memory dynamic VRAM can evict counts as free), else the
    device's."""
    owner = patcher(module)
    free = owner.get_free_memory(dev) if hasattr(owner, "get_free_memory") else mm.get_free_memory(dev)
    return max(1, int(free // max(per_item, 1)))


@contextlib.contextmanager
def loaded(*modules: torch.nn.Module, memory_required: int = 0):
    """Load models on ComfyUI's device through its manager (which frees what others hold if it must, and loads a model
    in part where it does not fit) and yield the device. Under --lowvram/--novram they are unloaded again when the
    node is done."""
    patchers = [patcher(m) for m in modules]
    mm.load_models_gpu(patchers, memory_required=memory_required)
    try:
        yield mm.get_torch_device()
    finally:
        if mm.vram_state in (mm.VRAMState.LOW_VRAM, mm.VRAMState.NO_VRAM):
            _unload(patchers)


def step_callback(steps: int, preview_factors: torch.Tensor | None = None):
    """A per-step callback: moves ComfyUI's progress bar (with a cheap latent-to-RGB preview where previews are
    on) and stops at once when the user cancels."""
    bar = comfy.utils.ProgressBar(steps)
    previews = preview_factors is not None and previews_on()

    def callback(step: int, total: int, sample: torch.Tensor) -> None:
        mm.throw_exception_if_processing_interrupted()
        bar.update_absolute(step + 1, total, preview_image(sample, preview_factors) if previews else None)

    mm.throw_exception_if_processing_interrupted()
    return callback


def previews_on() -> bool:
    return args.preview_method != LatentPreviewMethod.NoPreviews


def preview_image(latents: torch.Tensor, factors: torch.Tensor):
    """("JPEG", picture, max size): the first latent of a batch as colours, the form ComfyUI's previews take."""
    rgb = latents[0].float().permute(1, 2, 0).cpu() @ factors
    pixels = ((rgb + 1) / 2).clamp(0, 1).mul(255).byte().numpy()
    return "JPEG", Image.fromarray(pixels), PREVIEW_SIZE


def image_to_bchw(image, name: str = "image") -> torch.Tensor:
    """ComfyUI IMAGE [B, H, W, C] -> [B, 3, H, W] float (alpha dropped, grey repeated)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise KandinskyError(f"{name} must be an IMAGE [batch, height, width, 3], got {describe(image)}.")
    if image.numel() == 0:
        raise KandinskyError(f"{name} is empty (shape {tuple(image.shape)}): wire in a picture.")
    image = image[..., :3] if image.shape[-1] != 1 else image.expand(*image.shape[:-1], 3)
    return image.movedim(-1, 1).float()


def as_mask(mask):
    """ComfyUI MASK [H, W] -> [1, H, W]; anything else as it is, for the sampler to check."""
    return mask[None] if isinstance(mask, torch.Tensor) and mask.ndim == 2 else mask


def mask_bhw(mask: torch.Tensor) -> torch.Tensor:
    """A mask ComfyUI made, in any of its shapes ([H, W], [B, H, W], [B, 1, H, W], or [B, C, H, W] as its sampler
    expands a noise mask to the latent channels) -> [B, H, W]."""
    return mask[:, 0] if mask.ndim == 4 else mask.reshape(-1, *mask.shape[-2:])


def bchw_to_image(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.movedim(1, -1).to(out_device(), torch.float32)


def make_latent(samples: torch.Tensor, source: dict | None = None, size: tuple[int, int] | None = None) -> dict:
    """A LATENT of this pack (float32, as ComfyUI's own): a copy of ``source``, the LATENT it was made from, with
    these samples, so that its other keys pass on (as ComfyUI's KSampler does); MoVQ Encode adds the ``size`` of
    the picture it encoded."""
    latent = {**(source or {}), "samples": samples.to(out_device(), torch.float32)}
    if len(latent.get("batch_index", samples)) != len(samples):  # a new batch: the source's indices no longer fit
        del latent["batch_index"]
    return {**latent, SIZE_KEY: tuple(size)} if size else latent


def latent_samples(latent, name: str = "latent") -> torch.Tensor:
    """The samples of a LATENT (any node's: ComfyUI's latent nodes do not tell model families apart, so the
    samples' channel count is what the models check)."""
    if not isinstance(latent, dict) or not isinstance(latent.get("samples"), torch.Tensor):
        raise KandinskyError(f"{name} must be a LATENT, got {describe(latent)}: {WIRE_IN['LATENT']}.")
    return latent["samples"]
