"""Every node's bad inputs, each with the error it gives: the node, the input and the fix, never a traceback from
deep inside torch. ComfyUI's validation before a run checks widgets (min/max, combos) and socket types, not what a
socket carries or how inputs fit together, so the nodes check everything themselves; these tests call them directly,
past that validation."""
import shutil

import pytest
import torch

import tiny_models
from helpers import CONTROLNET_ID, DECODER_ID, DEPTH_ID, INPAINT_ID, PRIOR_ID

E = tiny_models.EMBED


@pytest.fixture(scope="module")
def models(run_node):
    def decoder(hub_id):
        return run_node("Kandinsky22DecoderLoader", model=hub_id, dtype="auto")

    text2img, movq, *_ = decoder(DECODER_ID)
    latent = run_node("Kandinsky22MoVQEncode", movq=movq, image=torch.rand(1, 64, 64, 3))[0]
    return {"prior": run_node("Kandinsky22PriorLoader", model=PRIOR_ID, dtype="auto")[0], "text2img": text2img,
            "movq": movq, "inpaint": decoder(INPAINT_ID)[0], "controlnet": decoder(CONTROLNET_ID)[0],
            "latent": latent, "depth": run_node("Kandinsky22DepthLoader", model=DEPTH_ID)[0]}


def good_inputs(m) -> dict:
    """Inputs that run, per node; each case below changes one of them."""
    embeds = torch.zeros(1, E)
    sampler = dict(positive=embeds, negative=embeds, steps=1, guidance_scale=4.0, seed=0, scheduler="default")
    prior = dict(prior=m["prior"], prompt="a cat", negative_prompt="", guidance_scale=4.0, steps=2, seed=0,
                 batch_size=1)
    return {
        "Kandinsky22PriorLoader": dict(model=PRIOR_ID, dtype="auto"),
        "Kandinsky22DecoderLoader": dict(model=DECODER_ID, dtype="auto"),
        "Kandinsky22DepthLoader": dict(model=DEPTH_ID),
        "Kandinsky22PriorEncode": prior,
        "Kandinsky22PriorEmb2Emb": {**prior, "image": torch.rand(1, 64, 64, 3), "strength": 0.5},
        "Kandinsky22ImageEncode": dict(prior=m["prior"], image=torch.rand(1, 64, 64, 3)),
        "Kandinsky22EmbedsMix": dict(embeds_1=embeds, weight_1=0.5, embeds_2=embeds, weight_2=0.5,
                                     method="weighted_sum"),
        "Kandinsky22DepthHint": dict(depth_model=m["depth"], image=torch.rand(1, 64, 64, 3)),
        "Kandinsky22Txt2Img": dict(decoder=m["text2img"], width=64, height=64, batch_size=1, **sampler),
        "Kandinsky22Img2Img": dict(decoder=m["text2img"], latent=m["latent"], strength=0.5, **sampler),
        "Kandinsky22Inpaint": dict(decoder=m["inpaint"], latent=m["latent"], mask=torch.ones(1, 64, 64), **sampler),
        "Kandinsky22ControlNet": dict(decoder=m["controlnet"], hint=torch.rand(1, 64, 64, 3), width=64, height=64,
                                      batch_size=1, **sampler),
        "Kandinsky22ControlNetImg2Img": dict(decoder=m["controlnet"], latent=m["latent"], hint=torch.rand(1, 64, 64, 3),
                                             strength=0.5, **sampler),
        "Kandinsky22MoVQEncode": dict(movq=m["movq"], image=torch.rand(1, 64, 64, 3)),
        "Kandinsky22MoVQDecode": dict(movq=m["movq"], latent=m["latent"]),
        "Kandinsky22Conditioning": dict(positive=embeds, negative=embeds, hint=torch.rand(1, 64, 64, 3)),
    }


NAN_ = float("nan")
NAN, INF = torch.full((1, E), NAN_), torch.full((1, E), float("inf"))
EMPTY_LATENT = {"samples": torch.zeros(1, 4, 8, 8)}  # what EmptyLatentImage gives for 64 x 64
DECODERS = ["Kandinsky22Txt2Img", "Kandinsky22Img2Img", "Kandinsky22Inpaint", "Kandinsky22ControlNet",
            "Kandinsky22ControlNetImg2Img"]
CASES = [
    ("Kandinsky22PriorLoader", dict(model="someone/missing"),
     "model 'someone/missing' is not on disk.*hf download someone/missing --local-dir"),
    ("Kandinsky22PriorLoader", dict(model=tiny_models.NAMES["text2img"]),
     "is a model of kind 'text2img', not a prior model"),
    ("Kandinsky22PriorLoader", dict(dtype="fp64"), "dtype 'fp64' is unknown: pick one of auto, fp32, fp16, bf16"),
    ("Kandinsky22DecoderLoader", dict(model="../../etc"), "model '../../etc' was not found"),
    ("Kandinsky22DepthLoader", dict(model=tiny_models.NAMES["prior"]),
     f"model '{tiny_models.NAMES['prior']}' was not found"),
    ("Kandinsky22PriorEncode", dict(steps=1), "steps is 1: the prior's scheduler needs at least 2 steps"),
    ("Kandinsky22PriorEncode", dict(batch_size=0), "batch_size is 0"),
    ("Kandinsky22PriorEncode", dict(seed=-1), r"seed is -1: it must be between 0 and 2\^64-1"),
    ("Kandinsky22PriorEncode", dict(seed=2**64), r"seed is 18446744073709551616"),
    ("Kandinsky22PriorEncode", dict(guidance_scale=float("nan")), "guidance_scale is nan"),
    ("Kandinsky22PriorEmb2Emb", dict(strength=1.5), "strength is 1.5: it must be between 0 and 1"),
    ("Kandinsky22PriorEmb2Emb", dict(image=torch.rand(64, 64, 3)),
     r"image must be an IMAGE \[batch, height, width, 3\]"),
    ("Kandinsky22ImageEncode", dict(image=torch.rand(1, 64, 64, 2)), "image must be an IMAGE"),
    ("Kandinsky22ImageEncode", dict(image=torch.rand(1, 0, 64, 3)), "image is empty"),
    ("Kandinsky22EmbedsMix", dict(embeds_2=torch.zeros(1, 1280)), "mix embeddings of the same prior"),
    ("Kandinsky22EmbedsMix", dict(embeds_2=torch.zeros(3, E), embeds_1=torch.zeros(2, E)), "batches"),
    ("Kandinsky22EmbedsMix", dict(method="average"), "method 'average' is unknown"),
    ("Kandinsky22EmbedsMix", dict(method="slerp", weight_1=-1.0), "slerp weights are shares"),
    ("Kandinsky22EmbedsMix", dict(embeds_2=NAN), "embeds_2 holds NaN or infinite values"),
    ("Kandinsky22DepthHint", dict(image=torch.rand(1, 64, 64)), "image must be an IMAGE"),
    ("Kandinsky22Txt2Img", dict(width=0), "width is 0: it must be a positive number of pixels"),
    ("Kandinsky22Txt2Img", dict(height=-64), "height is -64"),
    ("Kandinsky22Txt2Img", dict(width=100000), "width is 100000: at most 16384 pixels"),
    ("Kandinsky22Txt2Img", dict(batch_size=0), "batch_size is 0"),
    ("Kandinsky22Txt2Img", dict(steps=999999), "steps is 999999: it must be between 1 and 999"),
    ("Kandinsky22Txt2Img", dict(seed=-5), "seed is -5"),
    ("Kandinsky22Txt2Img", dict(guidance_scale=float("inf")), "guidance_scale is inf"),
    ("Kandinsky22Txt2Img", dict(scheduler="karras"), "scheduler 'karras' is unknown"),
    ("Kandinsky22Img2Img", dict(strength=-0.1), "strength is -0.1"),
    ("Kandinsky22Img2Img", dict(latent={**EMPTY_LATENT, "noise_mask": torch.ones(3, 64, 64)},
                                positive=torch.zeros(2, E)), "batches differ"),
    ("Kandinsky22ControlNetImg2Img", dict(latent={**EMPTY_LATENT, "noise_mask": torch.full((1, 64, 64), NAN_)}),
     "mask holds NaN"),
    ("Kandinsky22Img2Img", dict(latent={"samples": torch.zeros(1, 4, 9, 9)}),  # EmptyLatentImage's 72 x 72
     "latent is 9x9 but this decoder needs sides that are multiples of 2, pictures of multiples of 16 pixels: the "
     "nearest sizes that work are height 64 or 80, width 64 or 80 pixels"),
    ("Kandinsky22Img2Img", dict(latent={"samples": torch.zeros(1, 16, 8, 8)}),
     r"latent has shape \(1, 16, 8, 8\) but this decoder takes \[batch, 4, height, width\]: wire in the LATENT of "
     r"Kandinsky 2.2 MoVQ Encode"),
    ("Kandinsky22Img2Img", dict(positive=torch.zeros(2, E), negative=torch.zeros(3, E)), "batches differ"),
    ("Kandinsky22Inpaint", dict(mask=torch.ones(1, 1, 64, 64)),
     r"mask must be \[batch, height, width\], got \(1, 1, 64, 64\): wire in a MASK"),
    ("Kandinsky22Inpaint", dict(mask=torch.ones(3, 64, 64), positive=torch.zeros(2, E)), "batches differ"),
    ("Kandinsky22Inpaint", dict(mask=torch.full((1, 64, 64), float("nan"))), "mask holds NaN"),
    ("Kandinsky22ControlNet", dict(hint=torch.rand(1, 64, 64, 5)), "hint must be an IMAGE"),
    ("Kandinsky22ControlNet", dict(hint=torch.rand(2, 64, 64, 3), positive=torch.zeros(3, E)), "batches differ"),
    ("Kandinsky22ControlNetImg2Img", dict(strength=2.0), "strength is 2.0"),
    ("Kandinsky22ControlNetImg2Img", dict(hint=torch.rand(1, 0, 64, 3)), "hint is empty"),
    ("Kandinsky22MoVQEncode", dict(image=torch.rand(1, 64, 64)), "image must be an IMAGE"),
    ("Kandinsky22MoVQEncode", dict(image=torch.rand(1, 0, 0, 3)), "image is empty"),
    ("Kandinsky22MoVQDecode", dict(latent=torch.zeros(1, 4, 8, 8)), r"latent must be a LATENT, got \(1, 4, 8, 8\)"),
    ("Kandinsky22Conditioning", dict(positive=torch.zeros(E)),
     rf"positive must be image embeddings \[batch, width\], got \({E},\): wire in the embeddings"),
    ("Kandinsky22Conditioning", dict(negative=NAN), "negative holds NaN or infinite values"),
    ("Kandinsky22Conditioning", dict(hint=torch.rand(1, 64, 64, 5)), "hint must be an IMAGE"),
    *[(node, dict(positive=torch.zeros(1, 1280)), f"positive has width 1280 but this decoder takes {E}.*prior")
      for node in DECODERS],
    *[(node, dict(negative=torch.zeros(E)), rf"negative must be image embeddings \[batch, {E}\], got \({E},\): wire "
       r"in the embeddings of a Kandinsky 2.2 prior or embeds node\.$") for node in DECODERS],
    *[(node, dict(negative=NAN), "negative holds NaN or infinite values") for node in DECODERS],
    *[(node, dict(positive=INF), "positive holds NaN or infinite values") for node in DECODERS],
    ("Kandinsky22Txt2Img", dict(decoder="not a decoder"), r"decoder is not a Kandinsky 2.2 decoder \(str\)"),
]


@pytest.mark.parametrize("node,change,message", CASES,
                         ids=[f"{node.removeprefix('Kandinsky22')}-{'-'.join(change)}" for node, change, _ in CASES])
def test_bad_input_is_a_clear_error(run_node, models, node, change, message):
    with pytest.raises(ValueError, match=f"^{node}: .*{message}"):
        run_node(node, **(good_inputs(models)[node] | change))


def test_the_good_inputs_run(run_node, models):
    for node, inputs in good_inputs(models).items():
        run_node(node, **inputs)


@pytest.mark.parametrize("damage,message", [
    ("pickle", r"only pickle weights \(diffusion_pytorch_model.bin\).*never loads"),
    ("missing", "has no .safetensors weights"),
    ("variant", r"only variant weights \(diffusion_pytorch_model.ema.safetensors\) of another variant than fp16"),
    ("corrupt", "could not load the decoder UNet.*download the model again"),
    ("config", "holds no model this package recognises.*download the model again"),
])
def test_broken_model_folders_are_clear_errors(run_node, models_dir, tmp_path, damage, message):
    name = f"broken-{damage}"
    folder = models_dir / name
    pwned = tmp_path / "pwned"  # what the pickle below would touch if it were ever unpickled
    shutil.copytree(models_dir / tiny_models.NAMES["text2img"], folder)
    try:
        weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
        if damage == "pickle":
            weights.unlink()
            # A pickle that would run code if it were ever unpickled: it must not be.
            (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(
                f"cos\nsystem\n(S'touch {pwned}'\ntR.".encode())
        elif damage == "missing":
            weights.unlink()
        elif damage == "variant":  # fp16-only folders load (tests/core); other variants do not
            weights.rename(weights.with_suffix(".ema.safetensors"))
        elif damage == "corrupt":
            weights.write_bytes(weights.read_bytes()[:1000])
        else:
            (folder / "unet" / "config.json").write_text("{not json")
        with pytest.raises(ValueError, match=f"^Kandinsky22DecoderLoader: .*{message}"):
            run_node("Kandinsky22DecoderLoader", model=name, dtype="auto")
        assert not pwned.exists()
    finally:
        shutil.rmtree(folder)
