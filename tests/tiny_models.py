"""Tiny random-weight Kandinsky 2.2 models, saved as diffusers folders (safetensors) with diffusers' own
pipeline classes, so that the package's loaders and diffusers' pipelines read the very same files.

Run as a script to write them: ``python tests/tiny_models.py DIR`` -> DIR/diffusers/kandinsky-2-2-prior, ...
and a tiny DPT depth-estimation model (transformers) in DIR/depth_estimation/dpt-large.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

EMBED = 32  # CLIP image-embedding width of the tiny models (1280 in the real ones)
HUB_IDS = {  # the models the tiny ones stand in for
    "prior": "kandinsky-community/kandinsky-2-2-prior",
    "text2img": "kandinsky-community/kandinsky-2-2-decoder",
    "inpaint": "kandinsky-community/kandinsky-2-2-decoder-inpaint",
    "controlnet": "kandinsky-community/kandinsky-2-2-controlnet-depth",
    "depth": "Intel/dpt-large",
}
NAMES = {kind: hub_id.split("/")[1] for kind, hub_id in HUB_IDS.items() if kind != "depth"}  # their folders
# Byte-level BPE as CLIP does it: every printable byte alone and word-final, a few merges.
_MERGES = ["c a", "ca t</w>", "d o", "do g</w>", "r e", "re d</w>"]


def _byte_chars() -> list[str]:
    """The 256 characters CLIP's byte-level BPE maps bytes to (GPT-2's bytes_to_unicode)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def make_tokenizer():
    from transformers import CLIPTokenizer

    chars = _byte_chars()
    tokens = chars + [c + "</w>" for c in chars] + [m.replace(" ", "") for m in _MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]  # last, as in the real CLIP vocab
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    # Positional-by-name vocab/merges: transformers 5 ignores vocab_file=/merges_file= keywords.
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in _MERGES])
    tokenizer.model_max_length = 77
    return tokenizer


def make_prior():
    from diffusers import KandinskyV22PriorPipeline, PriorTransformer, UnCLIPScheduler
    from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    tokenizer = make_tokenizer()
    vocab = len(tokenizer)
    text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(
        bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1, hidden_size=EMBED,
        projection_dim=EMBED, intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4,
        num_hidden_layers=2, vocab_size=vocab, max_position_embeddings=77))
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=EMBED, num_layers=1)
    # Random clip_std/clip_mean so post-processing is exercised (the defaults are zeros).
    prior.clip_std = torch.nn.Parameter(torch.rand(1, EMBED) + 0.5)
    prior.clip_mean = torch.nn.Parameter(torch.randn(1, EMBED) * 0.1)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=EMBED, image_size=32, projection_dim=EMBED, intermediate_size=37, num_attention_heads=4,
        num_channels=3, num_hidden_layers=2, patch_size=8))
    image_processor = CLIPImageProcessor(
        crop_size=32, do_center_crop=True, do_normalize=True, do_resize=True, resample=3, size=32,
        image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711])
    scheduler = UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample",
                                num_train_timesteps=1000, clip_sample=True, clip_sample_range=10.0)
    return KandinskyV22PriorPipeline(prior=prior, image_encoder=image_encoder, text_encoder=text_encoder,
                                     tokenizer=tokenizer, scheduler=scheduler, image_processor=image_processor)


def make_movq():
    from diffusers import VQModel

    # Four levels: 8 pixels per latent cell, as in the real MoVQ (and as the ControlNet hint block assumes).
    return VQModel(block_out_channels=[32, 32, 64, 64], in_channels=3, latent_channels=4, layers_per_block=1,
                   down_block_types=["DownEncoderBlock2D"] * 3 + ["AttnDownEncoderBlock2D"],
                   up_block_types=["AttnUpDecoderBlock2D"] + ["UpDecoderBlock2D"] * 3,
                   norm_num_groups=8, norm_type="spatial", num_vq_embeddings=12, out_channels=3, vq_embed_dim=4)


def make_unet(kind: str):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        in_channels=9 if kind == "inpaint" else 8 if kind == "controlnet" else 4, out_channels=8,
        addition_embed_type="image_hint" if kind == "controlnet" else "image",
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=(32, 64), layers_per_block=1,
        encoder_hid_dim=EMBED, encoder_hid_dim_type="image_proj", cross_attention_dim=32, attention_head_dim=4,
        resnet_time_scale_shift="scale_shift", class_embed_type=None)


def make_decoder(kind: str = "text2img"):
    import diffusers

    # The real decoders' scheduler config (kandinsky-community/kandinsky-2-2-decoder).
    scheduler = diffusers.DDPMScheduler(
        beta_schedule="linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, num_train_timesteps=1000,
        prediction_type="epsilon", steps_offset=1, thresholding=False,
        timestep_spacing="leading", variance_type="fixed_small")
    pipeline = {"text2img": diffusers.KandinskyV22Pipeline, "inpaint": diffusers.KandinskyV22InpaintPipeline,
                "controlnet": diffusers.KandinskyV22ControlnetPipeline}[kind]
    return pipeline(unet=make_unet(kind), scheduler=scheduler, movq=make_movq())


def build(root: str | Path, seed: int = 0) -> Path:
    """Write every tiny model under root, a ComfyUI models folder: root/diffusers/<hub name> for the Kandinsky
    models and root/depth_estimation/dpt-large for the depth model. Models already there are kept."""
    root = Path(root)
    for i, kind in enumerate(NAMES):
        target = root / "diffusers" / NAMES[kind]
        if not (target / "model_index.json").is_file():
            torch.manual_seed(seed + i)
            pipe = make_prior() if kind == "prior" else make_decoder(kind)
            pipe.save_pretrained(target, safe_serialization=True)
    build_depth(root / "depth_estimation", seed)
    return root


DEPTH_NAME = HUB_IDS["depth"].split("/")[1]  # the folder of the depth model


def build_depth(root: str | Path, seed: int = 0) -> Path:
    """A tiny random DPT depth estimator and its processor under root/dpt-large (a models/depth_estimation)."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    target = Path(root) / DEPTH_NAME
    if not (target / "config.json").is_file():
        torch.manual_seed(seed)
        config = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37,
                           image_size=32, patch_size=8, backbone_out_indices=[0, 1, 2, 3],
                           neck_hidden_sizes=[16, 16, 32, 32], fusion_hidden_size=16,
                           reassemble_factors=[4, 2, 1, 0.5])
        DPTForDepthEstimation(config).save_pretrained(target)
        DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(target)
    return Path(root)


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else "tiny_models"))
