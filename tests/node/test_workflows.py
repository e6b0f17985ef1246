"""Each seed workflow as a node graph against the diffusers pipelines that define it, on the same tiny weights and
seeds. The documentation's examples reuse one generator across calls; nodes seed each call afresh, so the
reference gets a fresh generator per pipeline call."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline as transformers_pipeline

import reference
import tiny_models
from helpers import CONTROLNET_ID, DECODER_ID, DEPTH_ID, INPAINT_ID, PRIOR_ID, SIZE, as_image, as_tensor, picture

NEGATIVE_PRIOR_PROMPT = "lowres, text, error, cropped, worst quality, low quality"


@pytest.fixture(scope="module")
def loaded(run_node):
    def decoder(hub_id):
        return run_node("Kandinsky22DecoderLoader", model=hub_id, dtype="auto")

    return {"prior": run_node("Kandinsky22PriorLoader", model=PRIOR_ID, dtype="auto")[0],
            "text2img": decoder(DECODER_ID), "inpaint": decoder(INPAINT_ID), "controlnet": decoder(CONTROLNET_ID)}


@pytest.fixture(scope="module")
def embeds(run_node, loaded, models_dir):
    """(node positive, node negative, reference positive, reference negative) for one prompt."""
    nodes = run_node("Kandinsky22PriorEncode", prior=loaded["prior"], prompt="a red cat", negative_prompt="low quality",
                     guidance_scale=4.0, steps=3, seed=11, batch_size=1)[:2]
    ref = reference.prior(models_dir, "a red cat", "low quality", 4.0, 3, 11, 1)
    for got, expected in zip(nodes, ref):
        assert reference.max_diff(got, expected) <= 1e-4
    return (*nodes, *ref)


def movq_decode(run_node, movq, latent):
    return run_node("Kandinsky22MoVQDecode", movq=movq, latent=latent)[0]


def common(seed, steps=5):
    return dict(steps=steps, guidance_scale=4.0, seed=seed, scheduler="default")


def test_img2img(run_node, loaded, embeds, models_dir):
    decoder, movq, *_ = loaded["text2img"]
    image = picture(1)
    (latent,) = run_node("Kandinsky22MoVQEncode", movq=movq, image=as_image(image))
    (out,) = run_node("Kandinsky22Img2Img", decoder=decoder, positive=embeds[0], negative=embeds[1], latent=latent,
                      strength=0.5, **common(3, 6))
    expected = reference.decoder_pipeline(models_dir, "img2img", *embeds[2:], seed=3, image=image, strength=0.5,
                                          num_inference_steps=6, height=SIZE, width=SIZE)
    assert reference.max_diff(movq_decode(run_node, movq, out), expected) <= 1e-4


def test_inpaint(run_node, loaded, embeds, models_dir):
    decoder, movq, *_ = loaded["inpaint"]
    image = picture(2)
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, 10:40, 20:50] = 1  # repaint, as ComfyUI's MASK
    (latent,) = run_node("Kandinsky22MoVQEncode", movq=movq, image=as_image(image))
    (out,) = run_node("Kandinsky22Inpaint", decoder=decoder, positive=embeds[0], negative=embeds[1], latent=latent,
                      mask=mask, **common(4))
    # The reference gets the tensor MoVQ Encode encodes: its PIL path rounds and lays pixels out otherwise, and the
    # inpaint UNet amplifies such 1e-7 input differences.
    expected = reference.decoder_pipeline(models_dir, "inpaint", *embeds[2:], seed=4,
                                          image=as_tensor(image) * 2 - 1, mask_image=mask.clone(),
                                          num_inference_steps=5, height=SIZE, width=SIZE)
    assert reference.max_diff(movq_decode(run_node, movq, out), expected) <= 1e-4


def test_inpaint_warns_when_the_mask_repaints_nothing(run_node, loaded, embeds, caplog):
    decoder, movq, *_ = loaded["inpaint"]
    (latent,) = run_node("Kandinsky22MoVQEncode", movq=movq, image=as_image(picture(2)))
    run_node("Kandinsky22Inpaint", decoder=decoder, positive=embeds[0], negative=embeds[1], latent=latent,
             mask=torch.zeros(SIZE, SIZE), **common(4, 1))
    assert "repaints nothing" in caplog.text


def make_hint(image: Image.Image, depth_estimator) -> torch.Tensor:
    """The documentation's make_hint, as [1, 3, H, W]."""
    depth = np.array(depth_estimator(image)["depth"])[:, :, None]
    return torch.from_numpy(np.concatenate([depth] * 3, axis=2)).float().div(255.0).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def hint(run_node, depth_dir):
    """(node hint IMAGE, reference hint) for picture(3)."""
    (model,) = run_node("Kandinsky22DepthLoader", model=DEPTH_ID)
    (node_hint,) = run_node("Kandinsky22DepthHint", depth_model=model, image=as_image(picture(3)))
    estimator = transformers_pipeline("depth-estimation", model=str(depth_dir / tiny_models.DEPTH_NAME))
    expected = make_hint(picture(3), estimator)
    assert node_hint.shape == (1, SIZE, SIZE, 3)
    # Exact on any CPU: the same model call on the same input, then the same 8-bit depth picture.
    assert reference.max_diff(node_hint.permute(0, 3, 1, 2), expected) == 0
    return node_hint, expected


def test_controlnet_depth(run_node, loaded, embeds, hint, models_dir):
    decoder, movq, *_ = loaded["controlnet"]
    (out,) = run_node("Kandinsky22ControlNet", decoder=decoder, positive=embeds[0], negative=embeds[1], hint=hint[0],
                      width=SIZE, height=SIZE, **common(6), batch_size=1)
    expected = reference.decoder_pipeline(models_dir, "controlnet", *embeds[2:], seed=6, hint=hint[1],
                                          num_inference_steps=5, height=SIZE, width=SIZE)
    assert reference.max_diff(movq_decode(run_node, movq, out), expected) <= 1e-4


def test_controlnet_img2img_with_prior_emb2emb(run_node, loaded, hint, models_dir):
    decoder, movq, *_ = loaded["controlnet"]
    image = picture(3)

    def emb2emb(prompt, strength):
        nodes = run_node("Kandinsky22PriorEmb2Emb", prior=loaded["prior"], prompt=prompt, image=as_image(image),
                         strength=strength, negative_prompt="", guidance_scale=4.0, steps=5, seed=43, batch_size=1)
        ref = reference.pipeline(models_dir, "emb2emb")(prompt=prompt, image=image, strength=strength,
                                                        num_inference_steps=5, generator=reference.generator(43))
        assert reference.max_diff(nodes[0], ref.image_embeds) <= 1e-4
        assert reference.max_diff(nodes[1], ref.negative_image_embeds) <= 1e-4
        return nodes[0], ref.image_embeds

    positive, ref_positive = emb2emb("A robot, 4k photo", 0.85)
    negative, ref_negative = emb2emb(NEGATIVE_PRIOR_PROMPT, 1.0)  # its positive serves as the negative
    (latent,) = run_node("Kandinsky22MoVQEncode", movq=movq, image=as_image(image))
    (out,) = run_node("Kandinsky22ControlNetImg2Img", decoder=decoder, positive=positive, negative=negative,
                      latent=latent, hint=hint[0], strength=0.5, **common(8))
    expected = reference.decoder_pipeline(models_dir, "controlnet_img2img", ref_positive, ref_negative, seed=8,
                                          image=image, hint=hint[1], strength=0.5, num_inference_steps=5, height=SIZE,
                                          width=SIZE)
    assert reference.max_diff(movq_decode(run_node, movq, out), expected) <= 1e-4


def test_emb2emb_with_negative_prompt_and_batch(run_node, loaded, models_dir):
    image = picture(5)
    nodes = run_node("Kandinsky22PriorEmb2Emb", prior=loaded["prior"], prompt="a dog", image=as_image(image),
                     strength=0.6, negative_prompt="blurry", guidance_scale=4.0, steps=5, seed=2, batch_size=2)
    ref = reference.pipeline(models_dir, "emb2emb")(prompt="a dog", image=image, strength=0.6, negative_prompt="blurry",
                                                    num_inference_steps=5, num_images_per_prompt=2,
                                                    generator=reference.generator(2))
    assert reference.max_diff(nodes[0], ref.image_embeds) <= 1e-4
    assert reference.max_diff(nodes[1], ref.negative_image_embeds) <= 1e-4


@pytest.mark.parametrize("negative_prompt", ["", "blurry"])
def test_emb2emb_batch_of_pictures(run_node, loaded, models_dir, negative_prompt):
    """Each picture gives batch_size rows: the reference with the prompt (and negative prompt) once per picture."""
    images = [picture(11), picture(12)]
    nodes = run_node("Kandinsky22PriorEmb2Emb", prior=loaded["prior"], prompt="a dog",
                     image=torch.cat([as_image(i) for i in images]), strength=0.6, negative_prompt=negative_prompt,
                     guidance_scale=4.0, steps=5, seed=4, batch_size=2)
    ref = reference.pipeline(models_dir, "emb2emb")(prompt=["a dog"] * 2, image=images, strength=0.6,
                                                    negative_prompt=[negative_prompt] * 2 if negative_prompt else None,
                                                    num_inference_steps=5, num_images_per_prompt=2,
                                                    generator=reference.generator(4))
    assert nodes[0].shape == (4, tiny_models.EMBED)
    assert reference.max_diff(nodes[0], ref.image_embeds) <= 1e-4
    assert reference.max_diff(nodes[1], ref.negative_image_embeds) <= 1e-4


def test_interpolate_texts_and_images(run_node, loaded, models_dir):
    prior = loaded["prior"]
    images = [picture(6), picture(7)]
    positive, negative, _ = run_node("Kandinsky22PriorEncode", prior=prior, prompt="a cat", negative_prompt="",
                                  guidance_scale=4.0, steps=5, seed=9, batch_size=1)
    encoded = [run_node("Kandinsky22ImageEncode", prior=prior, image=as_image(i))[0] for i in images]
    (mixed,) = run_node("Kandinsky22EmbedsMix", embeds_1=positive, weight_1=0.3, embeds_2=encoded[0], weight_2=0.3,
                        method="weighted_sum", embeds_3=encoded[1], weight_3=0.4)
    # One text, so the reference's shared generator is used by that text's prior call alone, first: as fresh.
    ref = reference.pipeline(models_dir, "prior").interpolate(["a cat", *images], [0.3, 0.3, 0.4],
                                                              num_inference_steps=5, generator=reference.generator(9))
    assert reference.max_diff(mixed, ref.image_embeds) <= 1e-4
    assert reference.max_diff(negative, ref.negative_image_embeds) <= 1e-4
    decoder, movq, *_ = loaded["text2img"]
    (out,) = run_node("Kandinsky22Txt2Img", decoder=decoder, positive=mixed, negative=negative, width=SIZE,
                      height=SIZE, **common(10), batch_size=1)
    expected = reference.decoder_pipeline(models_dir, "text2img", ref.image_embeds, ref.negative_image_embeds, seed=10,
                                          num_inference_steps=5, height=SIZE, width=SIZE)
    assert reference.max_diff(movq_decode(run_node, movq, out), expected) <= 1e-4


def test_slerp_keeps_the_length_and_the_ends(run_node):
    a, b = torch.randn(1, 8), torch.randn(1, 8) * 3
    mix = lambda w1, w2: run_node("Kandinsky22EmbedsMix", embeds_1=a, weight_1=w1, embeds_2=b, weight_2=w2,  # noqa
                                  method="slerp")[0]
    assert torch.allclose(mix(1.0, 0.0), a) and torch.allclose(mix(0.0, 2.0), b, atol=1e-5)
    half = mix(0.5, 0.5)
    assert torch.allclose(half.norm(), (a.norm() + b.norm()) / 2, atol=1e-5)
    cos = torch.nn.functional.cosine_similarity
    assert torch.allclose(cos(half, a), cos(half, b), atol=1e-5)  # halfway along the arc


def test_depth_hint_of_a_flat_depth_map_is_black_not_nan(run_node, depth_dir):
    (model,) = run_node("Kandinsky22DepthLoader", model=tiny_models.DEPTH_NAME)
    torch.nn.init.zeros_(model.model.head.head[-2].weight)  # the last conv: depth 0 everywhere
    torch.nn.init.zeros_(model.model.head.head[-2].bias)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # numpy's "invalid value encountered" of a 0 / 0
        (hint,) = run_node("Kandinsky22DepthHint", depth_model=model, image=as_image(picture(4)))
    assert hint.shape == (1, SIZE, SIZE, 3) and torch.equal(hint, torch.zeros_like(hint))
