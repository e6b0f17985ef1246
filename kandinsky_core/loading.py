"""Find, recognise and load Kandinsky 2.2 model folders (diffusers layout), safetensors only.

A model is named either by a folder under one of the model roots (``my-decoder`` or ``sub/my-decoder``)
or by a hub id ``owner/name``, which lives in ``<root>/<name>``. A hub id that is not on disk is
taken from the Hugging Face cache when a full copy is there, else downloaded once into
``<first root>/<name>``.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import KandinskyError
from .movq import downscale, lean, preview_factors

log = logging.getLogger(__name__)

PRIOR, DECODER, DEPTH = "prior", "decoder", "depth"  # the families of models
TEXT2IMG, INPAINT, CONTROLNET = "text2img", "inpaint", "controlnet"  # the decoder kinds
DECODER_KINDS = (TEXT2IMG, INPAINT, CONTROLNET)
DECODER_HUB_IDS = {  # the hub repository of each decoder kind
    TEXT2IMG: "kandinsky-community/kandinsky-2-2-decoder",
    INPAINT: "kandinsky-community/kandinsky-2-2-decoder-inpaint",
    CONTROLNET: "kandinsky-community/kandinsky-2-2-controlnet-depth",
}
HUB_IDS = {  # each family's hub ids, listed before the folders found
    PRIOR: ("kandinsky-community/kandinsky-2-2-prior",),
    DECODER: tuple(DECODER_HUB_IDS.values()),
    DEPTH: ("Intel/dpt-large", "Intel/dpt-hybrid-midas"),
}

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Weight storage only (each layer casts its weights to the compute dtype as it runs): the fp8 types this torch has.
FP8 = {name: getattr(torch, kind) for name, kind in (("fp8_e4m3fn", "float8_e4m3fn"), ("fp8_e5m2", "float8_e5m2"))
       if hasattr(torch, kind)}
# Files a download takes: configs, tokenizer files and full-precision safetensors, never pickles. For half
# precision it takes the fp16 variant files (``model.fp16.safetensors``: half the download and the disk) instead.
FP16 = "fp16"
NOT_SAFETENSORS = ["*.bin", "*.ckpt", "*.pt", "*.pth", "*.msgpack", "*.h5"]  # pickles, other frameworks' weights
CONFIG_PATTERNS = ["*.json", "*.txt"]
DOWNLOAD_PATTERNS = [*CONFIG_PATTERNS, "*.safetensors"]
DOWNLOAD_IGNORE = [f"*.{FP16}*.safetensors", *NOT_SAFETENSORS]
HALF_PATTERNS = [*CONFIG_PATTERNS, f"*.{FP16}*.safetensors"]
_PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
WEIGHT_PARTS = {PRIOR: ["prior", "text_encoder", "image_encoder"], DECODER: ["unet", "movq"], DEPTH: ["."]}
_SCAN_DEPTH = 3  # how deep under a root model folders are looked for


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def model_kind(folder: str | os.PathLike) -> str | None:
    """``prior``, a decoder kind (``text2img``, ``inpaint``, ``controlnet``), ``depth`` (a transformers
    depth-estimation model) or None for anything else."""
    folder = Path(folder)
    index = _read_json(folder / "model_index.json")
    if not isinstance(index, dict):
        config = _read_json(folder / "config.json")
        architectures = config.get("architectures") or [] if isinstance(config, dict) else []
        return DEPTH if any(str(a).endswith("ForDepthEstimation") for a in architectures) else None
    if {"prior", "text_encoder", "tokenizer", "image_encoder"} <= index.keys():
        return PRIOR
    if not {"unet", "movq"} <= index.keys():
        return None
    unet = _read_json(folder / "unet" / "config.json") or {}
    if unet.get("in_channels") == 9:
        return INPAINT
    return {"image_hint": CONTROLNET, "image": TEXT2IMG}.get(unet.get("addition_embed_type"))


def family_of(kind: str | None) -> str | None:
    return DECODER if kind in DECODER_KINDS else kind


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


# Listings by (roots, family), each with the mtimes of the folders its walk went through: valid while none of them
# changed (as ComfyUI keys its own file lists). Callers list often (a UI on every validation), and a walk reads two
# JSON files per model folder.
_listings: dict[tuple, tuple[list[str], dict[str, int | None]]] = {}


def list_models(roots: list[str], family: str) -> list[str]:
    """The hub ids of ``family`` (``prior``, ``decoder`` or ``depth``), then every other matching folder."""
    key = (tuple(str(r) for r in roots), family)
    cached = _listings.get(key)
    if cached and all(_mtime(d) == t for d, t in cached[1].items()):
        return list(cached[0])
    names, walked = list(HUB_IDS[family]), {}
    homes = {home(hub_id) for hub_id in names}
    for root in key[0]:
        walked[root] = _mtime(root)  # None while it is missing: its creation shows as a change
        for dirpath, dirnames, _ in os.walk(root, followlinks=True):
            walked[dirpath] = _mtime(dirpath)
            rel = Path(dirpath).relative_to(root)
            if len(rel.parts) >= _SCAN_DEPTH:
                dirnames.clear()
            if rel.parts and family_of(model_kind(dirpath)) == family:
                dirnames.clear()  # a model folder's subfolders are its parts, not models
                name = rel.as_posix()
                if name not in homes and name not in names:
                    names.append(name)
    _listings[key] = (names, walked)
    return list(names)


def _folder(root: Path, name: str) -> Path | None:
    """root/name when it is a folder and the name stays inside root: no absolute name, no '..' (a symlinked model
    folder, as the listing shows it, is fine)."""
    rel = Path(name)
    if rel.anchor or ".." in rel.parts:
        return None
    return root / rel if (root / rel).is_dir() else None


def is_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not any(p in (".", "..") for p in parts)


def home(name: str) -> str:
    """The folder a model lives in under a model root: a hub id's name part, any other name as it is."""
    return name.split("/", 1)[1] if is_hub_id(name) else name


def download_command(repo_id: str, target) -> str:
    """The Hugging Face command line (``hf``, huggingface_hub 1.0's name for it) fetching what a download takes."""
    include, exclude = (" ".join(f"'{p}'" for p in patterns) for patterns in (DOWNLOAD_PATTERNS, DOWNLOAD_IGNORE))
    return f"hf download {repo_id} --local-dir {target} --include {include} --exclude {exclude}"


def search_help(name: str, roots: list[str]) -> str:
    searched = ", ".join(str(r) for r in roots) or "(no model folder is configured)"
    first = Path(roots[0] if roots else ".") / home(name)
    how = (f"download it with `{download_command(name, first)}` on a machine with network access"
           if is_hub_id(name) else "copy the diffusers model folder there")
    return f"searched: {searched}. Put the model in {first}: {how}."


def _from_hub(repo_id: str, target: Path, family: str, half: bool = False) -> Path:
    """A cached full snapshot of repo_id, else a download into target (for ``half`` precision the fp16 variant
    files, and the full-precision ones of any part that has no variant); a clear error offline."""
    from huggingface_hub import snapshot_download

    try:
        cached = Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=DOWNLOAD_PATTERNS,
                                        ignore_patterns=NOT_SAFETENSORS))
        _check_weights(cached, family)  # a cache holding only some parts is no full copy
        if model_kind(cached):
            return cached
    except Exception:  # not in the cache: fall through to a download
        pass
    log.warning("Kandinsky 2.2: downloading %s%s into %s (once; later runs load it from there)", repo_id,
                " (fp16 files)" if half else "", target)
    try:
        if half:  # the fp16 files first; then the full-precision files of the parts that have none
            snapshot_download(repo_id, local_dir=str(target), allow_patterns=HALF_PATTERNS,
                              ignore_patterns=NOT_SAFETENSORS)
        parts = [part for part in WEIGHT_PARTS[family] if not any(_weight_files(target / part))]
        if parts or not half:
            weights = [f"{part}/*.safetensors".removeprefix("./") for part in parts]
            snapshot_download(repo_id, local_dir=str(target), allow_patterns=[*CONFIG_PATTERNS, *weights],
                              ignore_patterns=DOWNLOAD_IGNORE)
    except Exception as exc:
        raise KandinskyError(
            f"model '{repo_id}' is not on disk and could not be downloaded ({type(exc).__name__}: {exc}). "
            f"Put it in {target}: run `{download_command(repo_id, target)}` on a machine with network access, "
            f"or copy the diffusers folder there."
        ) from None
    return target


def resolve(name: str, roots: list[str], family: str, download: bool = True, half: bool = False) -> Path:
    """The folder of model ``name`` of ``family``, downloading a hub id when allowed (its fp16 files for ``half``
    precision)."""
    if not isinstance(name, str) or not name.strip():
        raise KandinskyError("no model name given: pick one from the list.")
    resolved = [Path(r) for r in roots]

    def found(folder_name: str) -> Path | None:  # the first root's such folder that holds a model
        return next((p for r in resolved if (p := _folder(r, folder_name)) and model_kind(p)), None)

    path = found(name)
    if path is None and is_hub_id(name):
        path = found(home(name))
        if path is None and download and resolved:
            path = _from_hub(name, resolved[0] / home(name), family, half)
    if path is None:
        broken = next((p for r in resolved if (p := _folder(r, name))), None)
        if broken is not None:
            raise KandinskyError(f"folder {broken} holds no model this package recognises (its model_index.json or "
                                 f"config.json is missing or unreadable): download the model again.")
        raise KandinskyError(f"model '{name}' was not found; {search_help(name, roots)}")
    kind = model_kind(path)
    if family_of(kind) != family:
        found = f"a model of kind '{kind}'" if kind else "no model this package recognises"
        raise KandinskyError(
            f"model '{name}' ({path}) is {found}, not a {family} model: pick one such as '{HUB_IDS[family][0]}'."
        )
    return path


def _weight_files(part: Path) -> tuple[list[str], list[str]]:
    """(full-precision, fp16 variant) safetensors of a model part's folder: the files from_pretrained loads with no
    variant (``model.safetensors``, shards ``model-00001-of-00002.safetensors``) or with variant fp16."""
    names = [f.name for f in part.iterdir() if f.name.endswith(".safetensors")] if part.is_dir() else []
    full = [n for n in names if "." not in n.removesuffix(".safetensors")]
    half = [n for n in names if f".{FP16}" in n and n not in full]
    return full, half


def variant(part: Path, dtype: torch.dtype) -> str | None:
    """The files a part loads: the fp16 variant in fp16 when it has one, or when it has nothing else (cast to
    ``dtype``, with a logged note); else the full-precision files."""
    full, half = _weight_files(part)
    if half and (dtype == torch.float16 or not full):
        if dtype != torch.float16:
            log.info("Kandinsky 2.2: %s holds only fp16 weights: loading them as %s.", part, dtype)
        return FP16
    return None


def _check_weights(folder: Path, family: str) -> None:
    """Each weight part of ``family`` must hold full-precision or fp16-variant safetensors; pickles are refused,
    never unpickled."""
    for part in WEIGHT_PARTS[family]:
        if any(_weight_files(folder / part)):
            continue
        names = [f.name for f in (folder / part).iterdir()] if (folder / part).is_dir() else []
        weights = [n for n in names if n.endswith(".safetensors")]
        pickles = [n for n in names if n.endswith(_PICKLE_SUFFIXES)]
        if pickles:
            why = f"holds only pickle weights ({', '.join(pickles)}), which this package never loads for safety"
        elif weights:
            why = f"holds only variant weights ({', '.join(weights)}) of another variant than fp16"
        else:
            why = "has no .safetensors weights"
        raise KandinskyError(
            f"model folder {folder / part} {why}: download the safetensors of the model into it "
            f"(`{download_command('<hub id>', folder)}`)."
        )


def _load(what: str, fn, folder: Path, **kwargs):
    """``fn(folder, **kwargs)``: a from_pretrained or load_config; a clear error for a broken folder."""
    try:
        return fn(folder, **kwargs)
    except KandinskyError:
        raise
    except Exception as exc:
        raise KandinskyError(
            f"could not load the {what} from {folder} ({type(exc).__name__}: {exc}). The folder is incomplete "
            f"or corrupt: download the model again."
        ) from None


@dataclass
class PriorBundle:
    """Everything the prior stage needs."""
    prior: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    image_encoder: torch.nn.Module
    image_processor: object
    scheduler_config: dict
    zero_embed: torch.Tensor | None = None  # the zero picture's embedding (on the CPU), once made


@dataclass
class DecoderBundle:
    """The decoder UNet, its scheduler config and its kind."""
    unet: torch.nn.Module
    scheduler_config: dict
    kind: str
    movq_scale_factor: int  # pixels per latent cell of the MoVQ that came with it
    latent_channels: int  # the MoVQ's latent channels (the UNet may take more: mask, hint)
    preview_factors: torch.Tensor | None  # [latent_channels, 3]: latent cell -> colour, when previews are on
    dtype: torch.dtype = torch.float32


def load_prior(folder: str | os.PathLike, dtype: torch.dtype = torch.float32) -> PriorBundle:
    from diffusers import PriorTransformer, UnCLIPScheduler
    from transformers import (CLIPImageProcessor, CLIPTextModelWithProjection, CLIPTokenizer,
                              CLIPVisionModelWithProjection)

    folder = Path(folder)
    _check_weights(folder, PRIOR)
    tf = dict(use_safetensors=True, dtype=dtype)
    return PriorBundle(
        prior=_load("prior transformer", PriorTransformer.from_pretrained, folder, subfolder="prior",
                    use_safetensors=True, torch_dtype=dtype, variant=variant(folder / "prior", dtype)),
        text_encoder=_load("text encoder", CLIPTextModelWithProjection.from_pretrained, folder,
                           subfolder="text_encoder", variant=variant(folder / "text_encoder", dtype), **tf),
        tokenizer=_load("tokenizer", CLIPTokenizer.from_pretrained, folder, subfolder="tokenizer"),
        image_encoder=_load("image encoder", CLIPVisionModelWithProjection.from_pretrained, folder,
                            subfolder="image_encoder", variant=variant(folder / "image_encoder", dtype), **tf),
        image_processor=_load("image processor", CLIPImageProcessor.from_pretrained, folder,
                              subfolder="image_processor"),
        scheduler_config=dict(_load("scheduler config", UnCLIPScheduler.load_config, folder, subfolder="scheduler")),
    )


def speed_up(unet: torch.nn.Module, compile: bool = False) -> torch.nn.Module:
    """The opt-in torch.compile, on CUDA devices only: elsewhere its first call costs more than it saves. SDPA
    attention is diffusers' default already."""
    if compile:
        if torch.cuda.is_available():
            unet = torch.compile(unet)
        else:
            log.warning("Kandinsky 2.2: torch.compile is only used on a CUDA GPU; the UNet runs uncompiled here.")
    return unet


# safetensors' dtype names (its format's header), for the dtypes this torch has
SAFETENSORS_DTYPES = {name: getattr(torch, kind) for name, kind in (
    ("F64", "float64"), ("F32", "float32"), ("F16", "float16"), ("BF16", "bfloat16"), ("F8_E4M3", "float8_e4m3fn"),
    ("F8_E5M2", "float8_e5m2")) if hasattr(torch, kind)}


def to_channels_last(module: torch.nn.Module, part: Path, dtype: torch.dtype,
                     at_first_call: bool = False) -> torch.nn.Module:
    """``module`` (loaded from the model part folder ``part`` in ``dtype``) with its convolution weights in
    channels_last memory format, in place: on a CPU its convolutions then skip a reorder of every weight at every call.
    ``at_first_call`` leaves the copy to the module's first call (``pack_channels_last`` as its forward pre-hook), so
    that the load reads no weight, as from_pretrained reads none: its weights map the file.
    from_pretrained leaves each weight a view of one memory map of its file, and a copy of such a view would keep the
    pages it read counted in the process's RSS while that map lives: twice the weights. So each weight the copy will
    read as the file holds it first becomes a map of its own bytes (nothing read yet), unmapped with the copy.
    """
    weights = _unpacked(module)
    full, half = _weight_files(part)
    for path in (part / file for file in (half if variant(part, dtype) else full)):
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
        for name, entry in header.items():
            param = weights.get(name)
            if param is not None and (SAFETENSORS_DTYPES.get(entry["dtype"]), entry["shape"]) == (param.dtype,
                                                                                                   list(param.shape)):
                begin, end = entry["data_offsets"]
                mapped = np.memmap(path, dtype=np.uint8, mode="c", offset=8 + size + begin, shape=(end - begin,))
                param.data = torch.from_numpy(mapped).view(param.dtype).view(param.shape)
    if at_first_call:
        module.register_forward_pre_hook(pack_channels_last)
    else:
        pack_channels_last(module)
    return module


def _unpacked(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The convolution weights of ``module`` the channels_last copy is for: those on the CPU not yet in that format
    (1 x 1 kernels are so already)."""
    return {name: param for name, param in module.named_parameters() if param.ndim == 4
            and param.device.type == "cpu" and not param.is_contiguous(memory_format=torch.channels_last)}


def pack_channels_last(module: torch.nn.Module, *_) -> None:
    """Copies the convolution weights of ``module`` that are on the CPU and not channels_last into that format, in
    place. As a forward pre-hook it runs at every call, and copies again only what ComfyUI's weight patches (LoRA,
    merges) or their undoing put back in the file's layout, so the weights are always those the module holds.
    The new weights share one allocation, which malloc maps apart from its heap and gives back whole when they go: one
    allocation each fragmented the heap (RSS grew by 185 MiB at every unload and reload, mid size)."""
    weights = list(_unpacked(module).values())
    if not weights:
        return
    spans = [param.nbytes + -param.nbytes % 64 for param in weights]  # each start aligned to 64 bytes
    block, offset = torch.empty(sum(spans), dtype=torch.uint8), 0
    for param, span in zip(weights, spans):
        n, c, h, w = param.shape
        data = block[offset:offset + param.nbytes].view(param.dtype).view(n, h, w, c).permute(0, 3, 1, 2)
        param.data = data.copy_(param.data)
        offset += span


def image_encoder_from(bundle: PriorBundle, state_dict: dict, source: str) -> torch.nn.Module:
    """An image encoder of the prior's own architecture with other weights (a CLIP vision file, in transformers'
    key names), so picture embeddings can come from a ViT-bigG a user already has."""
    from transformers import CLIPVisionModelWithProjection

    with torch.device("meta"):
        encoder = CLIPVisionModelWithProjection(bundle.image_encoder.config)
    try:
        missing, unexpected = encoder.load_state_dict(state_dict, strict=False, assign=True)
    except RuntimeError as exc:  # shapes that differ: another architecture
        missing, unexpected = [str(exc).splitlines()[1][:200]], []
    missing, unexpected = ([k for k in keys if not k.endswith("position_ids")] for keys in (missing, unexpected))
    if missing or unexpected:
        raise KandinskyError(
            f"{source} is not a CLIP vision model like this prior's image encoder (a ViT-bigG with "
            f"{bundle.image_encoder.config.projection_dim}-wide embeddings): {(missing + unexpected)[:3]} ... Pick "
            f"a ViT-bigG CLIP vision model, or the prior's own image encoder.")
    position_ids = getattr(encoder.vision_model.embeddings, "position_ids", None)
    if position_ids is not None and position_ids.is_meta:  # a buffer the file need not hold
        encoder.vision_model.embeddings.register_buffer(
            "position_ids", torch.arange(position_ids.shape[-1]).expand(1, -1), persistent=False)
    return encoder.to(bundle.image_encoder.dtype).eval()


def load_decoder(folder: str | os.PathLike, dtype: torch.dtype = torch.float32, previews: bool = False,
                 channels_last: bool = False, at_first_call: bool = False):
    """(DecoderBundle, VQModel) from a decoder, decoder-inpaint or controlnet-depth folder; ``previews`` fits the
    latent-to-colour factors previews need (a small MoVQ decode, so only when they are shown); ``channels_last``
    puts the UNet's convolution weights in that memory format, at its first call where ``at_first_call`` says so
    (``to_channels_last``)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    folder = Path(folder)
    _check_weights(folder, DECODER)
    unet = _load("decoder UNet", UNet2DConditionModel.from_pretrained, folder, subfolder="unet",
                 variant=variant(folder / "unet", dtype), use_safetensors=True, torch_dtype=dtype)
    if channels_last:
        to_channels_last(unet, folder / "unet", dtype, at_first_call)
    movq = load_movq(folder, dtype)
    config = dict(_load("scheduler config", DDPMScheduler.load_config, folder, subfolder="scheduler"))
    bundle = DecoderBundle(unet, config, model_kind(folder), downscale(movq),
                           movq.config.latent_channels, preview_factors(movq) if previews else None, dtype)
    return bundle, movq


def load_movq(folder: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """The MoVQ of a decoder folder, in its lean form."""
    from diffusers import VQModel

    folder = Path(folder)
    return lean(_load("MoVQ", VQModel.from_pretrained, folder, subfolder="movq",
                      variant=variant(folder / "movq", dtype), use_safetensors=True, torch_dtype=dtype))


@dataclass
class DepthBundle:
    """A transformers depth-estimation model and its image processor."""
    model: torch.nn.Module
    processor: object


def load_depth(folder: str | os.PathLike, dtype: torch.dtype = torch.float32) -> DepthBundle:
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    folder = Path(folder)
    _check_weights(folder, DEPTH)
    model = _load("depth model", AutoModelForDepthEstimation.from_pretrained, folder, use_safetensors=True, dtype=dtype,
                  variant=variant(folder, dtype))
    processor = _load("depth image processor", AutoImageProcessor.from_pretrained, folder)
    return DepthBundle(model, processor)
