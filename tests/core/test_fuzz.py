"""Fuzzing the core functions on small shapes: every input either runs or raises the package's own clear error
(KandinskyError), never anything from deep inside torch (the node entry points: node/test_fuzz_nodes.py)."""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tiny_models
from helpers import FUZZ, runs_or_clear
from kandinsky_core import embeds, loading, prior, sampling

E = tiny_models.EMBED
numbers = st.floats(allow_nan=True, allow_infinity=True, width=32)
seeds = st.integers(min_value=-2, max_value=2**64 + 1)


@pytest.fixture(scope="module")
def models(models_dir):
    load = {kind: loading.load_decoder(models_dir / tiny_models.NAMES[kind], channels_last=True)
            for kind in loading.DECODER_KINDS}
    return load, loading.load_prior(models_dir / tiny_models.NAMES["prior"])


def tensors(max_batch=3, width=st.sampled_from([E, E, 16]), special=True):
    """Embedding-like tensors [B, D], sometimes with NaN/inf, sometimes of another rank."""
    def build(batch, d, fill, rank):
        shape = [(batch, d), (d,), (batch, d, 1)][rank]
        t = torch.randn(*shape)
        return t.fill_(fill) if fill is not None else t
    fills = st.one_of(st.none(), st.sampled_from([float("nan"), float("inf")])) if special else st.none()
    return st.builds(build, st.integers(1, max_batch), width, fills, st.sampled_from([0, 0, 0, 1, 2]))


@FUZZ
@given(positive=tensors(), negative=tensors(), h=st.integers(-64, 200), w=st.integers(-64, 200),
       steps=st.integers(-1, 3), guidance=numbers, seed=seeds, batch=st.integers(-1, 2),
       scheduler=st.sampled_from(["default", "ddim", "euler", "dpmpp_2m", "nope"]))
def test_txt2img(models, positive, negative, h, w, steps, guidance, seed, batch, scheduler):
    decoder, _ = models[0]["text2img"]
    out = runs_or_clear(sampling.txt2img, decoder, positive, negative, height=h, width=w, steps=steps,
                        guidance_scale=guidance, seed=seed, batch_size=batch, scheduler=scheduler)
    assert out is None or torch.isfinite(out).all()


@FUZZ
@given(positive=tensors(), latents=st.builds(lambda b, c, h, w: torch.randn(b, c, h, w), st.integers(1, 3),
                                              st.sampled_from([4, 4, 3]), st.integers(1, 10), st.integers(1, 10)),
       strength=numbers, steps=st.integers(0, 3), seed=seeds, hint=st.booleans(),
       scheduler=st.sampled_from(["default", "unipc", "euler_ancestral"]))
def test_img2img(models, positive, latents, strength, steps, seed, hint, scheduler):
    kind = "controlnet" if hint else "text2img"
    decoder, _ = models[0][kind]
    hint_image = torch.rand(latents.shape[0], 3, 16, 16) if hint else None
    runs_or_clear(sampling.img2img, decoder, positive, positive, latents=latents, strength=strength, steps=steps,
                  seed=seed, scheduler=scheduler, hint=hint_image)


@FUZZ
@given(latent_batch=st.integers(1, 3), mask=st.builds(
    lambda b, h, w, rank, fill: torch.full((b, h, w)[3 - rank:], fill), st.integers(1, 3), st.integers(1, 40),
    st.integers(1, 40), st.sampled_from([2, 3, 3, 1]), st.sampled_from([0.0, 1.0, 0.7, float("nan")])),
    steps=st.integers(0, 2), seed=seeds)
def test_inpaint(models, latent_batch, mask, steps, seed):
    decoder, _ = models[0]["inpaint"]
    runs_or_clear(sampling.inpaint, decoder, torch.randn(1, E), torch.randn(1, E),
                  latents=torch.randn(latent_batch, 4, 8, 8), mask=mask, steps=steps, seed=seed)


@FUZZ
@given(items=st.lists(st.tuples(tensors(special=True), numbers), min_size=0, max_size=4),
       method=st.sampled_from(["weighted_sum", "slerp", "other"]))
def test_embeds_mix(items, method):
    out = runs_or_clear(embeds.mix, [e for e, _ in items], [w for _, w in items], method)
    if out is not None and all(math.isfinite(w) for _, w in items):
        assert out.ndim == 2


@FUZZ
@given(prompt=st.text(max_size=300), negative=st.text(max_size=40), steps=st.integers(0, 3), guidance=numbers,
       seed=seeds, batch=st.integers(0, 2), strength=numbers, image=st.booleans())
def test_prior(models, prompt, negative, steps, guidance, seed, batch, strength, image):
    bundle = models[1]
    if image:
        runs_or_clear(prior.emb2emb, bundle, prompt, torch.rand(1, 3, 40, 30), strength, negative,
                      guidance_scale=guidance, steps=steps, seed=seed, batch_size=batch)
    else:
        runs_or_clear(prior.text_to_embeds, bundle, prompt, negative, guidance_scale=guidance, steps=steps, seed=seed,
                      batch_size=batch)
