"""kandinsky_core alone, with no ComfyUI: loading rules, parity with diffusers, clear errors."""
import copy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import reference
import tiny_models
from helpers import CONTROLNET_ID, DECODER_ID, INPAINT_ID, PRIOR_ID
from kandinsky_core import KandinskyError, loading, movq, prior, sampling, schedulers

E = tiny_models.EMBED
DECODER_IDS = [DECODER_ID, INPAINT_ID, CONTROLNET_ID]  # the decoder loader lists these first, in this order


@pytest.fixture(scope="module")
def bundles(models_dir):
    roots = [str(models_dir)]
    prior_bundle = loading.load_prior(loading.resolve(PRIOR_ID, roots, "prior"))
    decoder, mq = loading.load_decoder(loading.resolve(DECODER_ID, roots, "decoder"), channels_last=True)
    return prior_bundle, decoder, mq


def test_tiny_tokenizer_gives_real_token_ids(bundles):
    tokenizer = bundles[0].tokenizer
    vocab = tokenizer.get_vocab()
    assert tokenizer.model_max_length == 77
    expected = [vocab["<|startoftext|>"], vocab["a</w>"], vocab["red</w>"], vocab["cat</w>"], vocab["<|endoftext|>"]]
    assert tokenizer("a red cat").input_ids == expected


def test_model_kinds_and_lists(models_dir):
    kinds = {kind: loading.model_kind(models_dir / name) for kind, name in tiny_models.NAMES.items()}
    assert kinds == {"prior": "prior", "text2img": "text2img", "inpaint": "inpaint", "controlnet": "controlnet"}
    assert loading.list_models([str(models_dir)], "prior") == [PRIOR_ID]
    assert loading.list_models([str(models_dir)], "decoder") == DECODER_IDS


def test_other_folders_are_listed_under_their_own_name(models_dir, tmp_path):
    shutil.copytree(models_dir / tiny_models.NAMES["text2img"], tmp_path / "mine" / "my-decoder")
    (tmp_path / "not-a-model").mkdir()
    names = loading.list_models([str(tmp_path), str(models_dir)], "decoder")
    assert names == [*DECODER_IDS, "mine/my-decoder"]
    assert loading.resolve("mine/my-decoder", [str(tmp_path)], "decoder") == (tmp_path / "mine/my-decoder").resolve()


def test_listings_are_cached_until_a_folder_changes(models_dir, tmp_path, monkeypatch):
    roots = [str(tmp_path)]
    assert loading.list_models(roots, "decoder") == DECODER_IDS
    shutil.copytree(models_dir / tiny_models.NAMES["text2img"], tmp_path / "mine" / "my-decoder")
    assert loading.list_models(roots, "decoder")[-1] == "mine/my-decoder"  # a new folder under a new one
    reads = []
    monkeypatch.setattr(loading, "model_kind", lambda folder: reads.append(folder))
    assert loading.list_models(roots, "decoder")[-1] == "mine/my-decoder"
    assert reads == []  # nothing changed: no folder was read again
    monkeypatch.undo()
    shutil.rmtree(tmp_path / "mine" / "my-decoder")
    assert loading.list_models(roots, "decoder") == DECODER_IDS
    (tmp_path / "mine" / "my-prior").mkdir()  # a model whose files arrive after the listing saw its folder
    assert loading.list_models(roots, "prior") == [PRIOR_ID]
    for part in ("model_index.json", "prior", "text_encoder", "tokenizer", "image_encoder"):
        source = models_dir / tiny_models.NAMES["prior"] / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / "mine" / "my-prior" / part)
    assert loading.list_models(roots, "prior")[-1] == "mine/my-prior"


def test_hub_id_lives_in_its_name_folder(models_dir, tmp_path):
    path = loading.resolve(DECODER_ID, [str(tmp_path / "missing"), str(models_dir)], "decoder")
    assert path == (models_dir / tiny_models.NAMES["text2img"]).resolve()


# "{tmp}/outside": an absolute path to a real model folder, outside the root.
@pytest.mark.parametrize("name", ["nope", "../outside", "{tmp}/outside", ""],
                         ids=["unknown", "relative-outside", "absolute-outside", "empty"])
def test_unknown_names_say_where_was_searched(models_dir, tmp_path, name):
    shutil.copytree(models_dir / tiny_models.NAMES["text2img"], tmp_path / "outside")
    (tmp_path / "root").mkdir()
    with pytest.raises(KandinskyError, match="searched|no model name"):
        loading.resolve(name.format(tmp=tmp_path), [str(tmp_path / "root")], "decoder")


def test_missing_hub_model_offline_names_the_folder(tmp_path):
    folder = tmp_path / tiny_models.NAMES["text2img"]
    with pytest.raises(KandinskyError, match=f"{folder}.*hf download"):
        loading.resolve(DECODER_ID, [str(tmp_path)], "decoder")


def test_wrong_family_is_clear(models_dir):
    with pytest.raises(KandinskyError, match="is a model of kind 'prior', not a decoder model"):
        loading.resolve(tiny_models.NAMES["prior"], [str(models_dir)], "decoder")


def test_pickle_only_weights_are_refused_unread(models_dir, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(models_dir / tiny_models.NAMES["text2img"], folder)
    for f in (folder / "unet").glob("*.safetensors"):
        f.unlink()
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not even a pickle")
    with pytest.raises(KandinskyError, match=r"only pickle weights \(diffusion_pytorch_model.bin\).*never loads"):
        loading.load_decoder(folder)


def test_corrupt_weights_are_a_clear_error(models_dir, tmp_path):
    folder = tmp_path / "corrupt"
    shutil.copytree(models_dir / tiny_models.NAMES["prior"], folder)
    (folder / "prior" / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(KandinskyError, match="could not load the prior transformer.*download the model again"):
        loading.load_prior(folder)


@pytest.mark.parametrize("negative_prompt,guidance,batch", [("", 4.0, 1), ("blurry, ugly", 4.0, 2), ("", 1.0, 2)])
def test_prior_matches_diffusers(bundles, models_dir, negative_prompt, guidance, batch):
    positive, negative = prior.text_to_embeds(bundles[0], "a red cat", negative_prompt, guidance_scale=guidance,
                                              steps=5, seed=123, batch_size=batch)
    ref_pos, ref_neg = reference.prior(models_dir, "a red cat", negative_prompt, guidance, 5, 123, batch)
    assert positive.shape == (batch, E)
    assert reference.max_diff(positive, ref_pos) <= 1e-4
    assert reference.max_diff(negative, ref_neg) <= 1e-4


def test_long_prompts_are_truncated_as_the_reference_does(bundles, models_dir):
    long = "red cat " * 60
    positive, _ = prior.text_to_embeds(bundles[0], long, steps=2, seed=1)
    assert reference.max_diff(positive, reference.prior(models_dir, long, steps=2, seed=1)[0]) <= 1e-4


@pytest.mark.parametrize("width,height,batch", [(64, 64, 1), (128, 64, 2), (100, 64, 1)])
def test_txt2img_matches_diffusers(bundles, models_dir, width, height, batch):
    _, decoder, mq = bundles
    positive, negative = reference.prior(models_dir, "a dog", steps=3, seed=5)
    latents = sampling.txt2img(decoder, positive, negative, height=height, width=width, steps=4, seed=9,
                               batch_size=batch)
    pixels = movq.decode(mq, latents).permute(0, 2, 3, 1)
    expected = reference.txt2img(models_dir, positive, negative, width, height, steps=4, seed=9, batch_size=batch)
    assert reference.max_diff(pixels, expected) <= 1e-4


def test_txt2img_matches_diffusers_in_the_default_layout(bundles, models_dir):
    """The layout the loader keeps off the CPU: both UNets contiguous (the other tests run both channels_last)."""
    mq = bundles[2]
    unet = reference.pipeline(models_dir, "text2img").unet
    plain = loading.load_decoder(models_dir / tiny_models.NAMES["text2img"])[0]
    assert plain.unet.conv_in.weight.is_contiguous()
    positive, negative = reference.prior(models_dir, "a dog", steps=3, seed=5)
    try:
        unet.to(memory_format=torch.contiguous_format)
        expected = reference.txt2img(models_dir, positive, negative, 64, 64, steps=4, seed=9)
    finally:
        unet.to(memory_format=torch.channels_last)
    latents = sampling.txt2img(plain, positive, negative, height=64, width=64, steps=4, seed=9)
    assert reference.max_diff(movq.decode(mq, latents).permute(0, 2, 3, 1), expected) <= 1e-4


def test_latent_size_rounds_up_to_the_movq_grid():
    assert movq.latent_size(768, 768, 8) == (96, 96)
    assert movq.latent_size(700, 769, 8) == (88, 104)
    assert movq.latent_size(1, 64, 2) == (2, 32)
    for bad in (0, -64):
        with pytest.raises(KandinskyError, match="positive"):
            movq.latent_size(bad, 64, 8)


@pytest.mark.parametrize("name", schedulers.NAMES)
def test_every_scheduler_runs(bundles, name):
    _, decoder, _ = bundles
    embeds = torch.randn(1, E)
    latents = sampling.txt2img(decoder, embeds, embeds * 0, height=64, width=64, steps=3, scheduler=name, seed=1)
    assert latents.shape == (1, 4, 8, 8) and torch.isfinite(latents).all()


@pytest.mark.parametrize("change,message", [
    (dict(steps=0), "steps is 0"),
    (dict(batch_size=0), "batch_size is 0"),
    (dict(scheduler="nope"), "scheduler 'nope' is unknown"),
    (dict(positive=torch.zeros(1, 1280)), f"positive has width 1280 but this decoder takes {E}"),
    (dict(negative=torch.full((1, E), float("nan"))), "negative holds NaN"),
    (dict(negative=torch.zeros(3, E)), "batches differ .positive has batch 2, negative has batch 3"),
    (dict(positive=torch.zeros(E)), rf"positive must be image embeddings \[batch, {E}\], got \({E},\)"),
])
def test_bad_decoder_inputs_are_clear_errors(bundles, change, message):
    _, decoder, _ = bundles
    args = dict(positive=torch.zeros(2, E), negative=torch.zeros(1, E),
                height=64, width=64, steps=2) | change
    with pytest.raises(KandinskyError, match=message):
        sampling.txt2img(decoder, **args)


def test_prior_needs_two_steps(bundles):
    with pytest.raises(KandinskyError, match="at least 2 steps"):
        prior.text_to_embeds(bundles[0], "a cat", steps=1)


def test_movq_round_trip_matches_the_model(bundles):
    _, _, mq = bundles
    images = torch.rand(2, 3, 64, 128)
    latents = movq.encode(mq, images)
    # Exact on any CPU: the same operations in the same order as the pipelines' (here and below).
    assert reference.max_diff(latents, mq.encode(images * 2 - 1).latents) == 0
    decoded = movq.decode(mq, latents)
    expected = (mq.decode(latents, force_not_quantize=True).sample * 0.5 + 0.5).clamp(0, 1)
    assert reference.max_diff(decoded, expected) == 0
    with pytest.raises(KandinskyError,
                       match=r"latent has shape \(1, 16, 4, 4\) but this MoVQ takes \[batch, 4, height, width\]"):
        movq.decode(mq, torch.zeros(1, 16, 4, 4))
    assert movq.encode(mq, torch.rand(1, 3, 30, 70)).shape == (1, 4, 8, 16)  # resized up to the 64 px grid
    assert np.isfinite(decoded.numpy()).all()


def test_the_lean_movq_decodes_as_diffusers_own(bundles, models_dir):
    from diffusers import VQModel

    _, _, mq = bundles
    stock = VQModel.from_pretrained(models_dir / tiny_models.NAMES["text2img"], subfolder="movq")
    lean = {name: m for name, m in mq.named_modules() if type(m).__name__ == "LeanSpatialNorm"}
    assert lean.keys() == {name for name, m in stock.named_modules() if type(m).__name__ == "SpatialNorm"} != set()
    latents = torch.randn(2, 4, 8, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        # Exact on any CPU: the same elementwise products and sums, each rounded once; only where they land differs.
        assert torch.equal(mq.decode(latents, force_not_quantize=True).sample,
                           stock.decode(latents, force_not_quantize=True).sample)
    name = "decoder.conv_norm_out"
    f, zq = torch.randn(1, lean[name].norm_layer.num_channels, 8, 8), torch.randn(1, 4, 4, 4)
    with torch.no_grad():
        kept = f.clone()
        assert torch.equal(lean[name](f, zq), stock.get_submodule(name)(f, zq)) and torch.equal(f, kept)
    f.requires_grad_()
    lean[name](f, zq).sum().backward()  # autograd takes diffusers' own forward
    assert f.grad is not None


@pytest.fixture
def cached_decoder(models_dir, tmp_path, monkeypatch) -> Path:
    """The tiny decoder in a Hugging Face cache (tmp_path/hub) as huggingface_hub lays it out: refs/main names the
    snapshot folder that holds the files. Returns that snapshot folder."""
    from huggingface_hub import constants

    repo = tmp_path / "hub" / f"models--{DECODER_ID.replace('/', '--')}"
    shutil.copytree(models_dir / tiny_models.NAMES["text2img"], repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return repo / "snapshots" / "abc123"


def test_a_copy_in_the_hugging_face_cache_is_reused(cached_decoder, tmp_path):
    empty = tmp_path / "diffusers"
    path = loading.resolve(DECODER_ID, [str(empty)], "decoder")
    assert path == cached_decoder.resolve() and not empty.exists()


def test_a_cache_copy_of_fp16_files_only_is_used(cached_decoder, tmp_path):
    weights = cached_decoder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".fp16.safetensors"))  # a diffusers download with variant="fp16"
    assert loading.resolve(DECODER_ID, [str(tmp_path / "diffusers")], "decoder") == cached_decoder.resolve()


@pytest.fixture(scope="module")
def variants(models_dir, tmp_path_factory) -> dict:
    """Decoder folders: "half" holds only fp16-variant weights; "both" full-precision weights and fp16-variant ones
    of other values (so that a test sees which were loaded); "mixed" an fp16 UNet beside a full-precision MoVQ."""
    root = tmp_path_factory.mktemp("variants")
    source = models_dir / tiny_models.NAMES["text2img"]
    unet, movq = loading.load_decoder(source)[0].unet, loading.load_decoder(source)[1]
    folders = {name: shutil.copytree(source, root / name) for name in ("half", "both", "mixed")}
    for name, folder in folders.items():
        for part, module in (("unet", unet), ("movq", movq)):
            if name == "mixed" and part == "movq":
                continue
            other = copy.deepcopy(module).half()
            with torch.no_grad():
                for p in other.parameters():
                    p.add_(1 if name == "both" else 0)
            other.save_pretrained(folder / part, variant="fp16")
            if name == "half":
                (folder / part / "diffusion_pytorch_model.safetensors").unlink()
    return folders


def unet_weight(folder: Path, fp16: bool) -> torch.Tensor:
    from safetensors.torch import load_file

    name = "diffusion_pytorch_model.fp16.safetensors" if fp16 else "diffusion_pytorch_model.safetensors"
    return load_file(folder / "unet" / name)["conv_in.weight"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.bfloat16])
def test_an_fp16_only_folder_loads_in_every_dtype(variants, dtype, caplog):
    caplog.set_level("INFO", logger=loading.__name__)
    decoder, movq = loading.load_decoder(variants["half"], dtype)
    assert decoder.unet.dtype == dtype and next(movq.parameters()).dtype == dtype
    assert torch.equal(decoder.unet.conv_in.weight, unet_weight(variants["half"], True).to(dtype))
    assert ("holds only fp16 weights" in caplog.text) == (dtype != torch.float16)
    assert "half" in loading.list_models([str(variants["half"].parent)], "decoder")  # listed like any other


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_a_folder_with_both_loads_the_variant_for_fp16_and_the_full_files_else(variants, dtype):
    decoder, _ = loading.load_decoder(variants["both"], dtype)
    expected = unet_weight(variants["both"], dtype == torch.float16).to(dtype)
    assert torch.equal(decoder.unet.conv_in.weight, expected)


@pytest.mark.parametrize("folder,dtype", [("both", torch.float16), ("both", torch.float32), ("half", torch.float32)])
def test_channels_last_holds_the_weights_as_loaded(variants, folder, dtype):
    """Read from the file (fp16 variant, full precision) or, cast as loaded, copied: the same values either way."""
    plain, layered = (loading.load_decoder(variants[folder], dtype, channels_last=c)[0].unet for c in (False, True))
    expected = plain.state_dict()
    for name, weight in layered.state_dict().items():
        assert torch.equal(weight, expected[name]), name
        assert weight.ndim != 4 or weight.is_contiguous(memory_format=torch.channels_last), name
    assert not layered.conv_in.weight.is_contiguous()  # a layout of its own: 3 x 3 kernels
    storages = {p.untyped_storage().data_ptr() for p in layered.parameters() if p.ndim == 4 and p.shape[-1] > 1}
    assert len(storages) == 1  # one allocation, given back whole (1 x 1 kernels are channels_last as they are)


def mapping_size(tensor: torch.Tensor) -> int:
    """Bytes of the memory mapping that holds ``tensor``'s data (Linux's /proc/self/maps)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        low, high = (int(bound, 16) for bound in line.split()[0].split("-"))
        if low <= tensor.data_ptr() < high:
            return high - low
    raise AssertionError("not in any mapping")


@pytest.mark.parametrize("folder,mapped", [("both", True), ("half", False)])
def test_channels_last_at_first_call_copies_then_and_after_each_weight_swap(variants, folder, mapped):
    """The load leaves the copy to the UNet's first call, which then computes as the eagerly copied UNet does. Each
    weight still as in the file (not cast) maps its own bytes meanwhile, not from_pretrained's whole file, so the copy
    gives its pages back.
    Each later call copies what a weight patch put back in the file's layout (ComfyUI's patches swap parameters)."""
    eager = loading.load_decoder(variants[folder], channels_last=True)[0].unet
    lazy = loading.load_decoder(variants[folder], channels_last=True, at_first_call=True)[0].unet
    waiting = [p for p in lazy.parameters() if p.ndim == 4 and p.shape[-1] > 1]
    assert waiting and not any(p.is_contiguous(memory_format=torch.channels_last) for p in waiting)
    assert not mapped or all(mapping_size(p) <= p.nbytes + 8192 for p in waiting)  # its bytes, page-aligned
    x, embeds = torch.randn(2, 4, 8, 8), torch.randn(2, lazy.config.encoder_hid_dim)

    def predict(unet):
        with torch.no_grad():
            return sampling.predict_noise(unet, x, torch.tensor([10, 500]), embeds, 4)

    assert torch.equal(predict(lazy), predict(eager))
    expected = eager.state_dict()
    for name, weight in lazy.state_dict().items():
        assert torch.equal(weight, expected[name]), name
        assert weight.ndim != 4 or weight.is_contiguous(memory_format=torch.channels_last), name
    original = lazy.conv_in.weight
    lazy.conv_in.weight = torch.nn.Parameter(original.detach().contiguous() + 1, requires_grad=False)  # a patch
    predict(lazy)
    assert lazy.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(lazy.conv_in.weight, original + 1)
    lazy.conv_in.weight = original  # and its undoing
    assert torch.equal(predict(lazy), predict(eager))


@pytest.mark.parametrize("source,half", [("both", True), ("both", False), ("mixed", True)])
def test_a_download_takes_fp16_files_for_half_precision(variants, tmp_path, monkeypatch, source, half):
    """A hub repository holding full and fp16 files (a local snapshot stands in for it): an fp16 load downloads the
    fp16 files, and the full ones only of a part without fp16 files; any other load the full ones."""
    import huggingface_hub
    from huggingface_hub.utils import LocalEntryNotFoundError, filter_repo_objects

    repo = variants[source]
    files = [str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file()]

    def snapshot_download(repo_id, local_files_only=False, local_dir=None, allow_patterns=None,
                          ignore_patterns=None):
        if local_files_only:
            raise LocalEntryNotFoundError("not in the cache")
        for f in filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns):
            (Path(local_dir) / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(repo / f, Path(local_dir) / f)
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    path = loading.resolve(DECODER_ID, [str(tmp_path)], "decoder", half=half)
    got = sorted(str(p.relative_to(path)) for p in path.rglob("*.safetensors"))
    fp16_movq = source == "both"
    assert got == sorted([f"unet/diffusion_pytorch_model{'.fp16' if half else ''}.safetensors",
                          f"movq/diffusion_pytorch_model{'.fp16' if half and fp16_movq else ''}.safetensors"])
    dtype = torch.float16 if half else torch.float32
    assert loading.load_decoder(path, dtype)[0].unet.dtype == dtype


def test_a_symlinked_model_folder_is_listed_and_loads(models_dir, tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "linked").symlink_to(models_dir / tiny_models.NAMES["text2img"], target_is_directory=True)
    roots = [str(tmp_path / "root")]
    assert "linked" in loading.list_models(roots, "decoder")
    assert loading.resolve("linked", roots, "decoder") == tmp_path / "root" / "linked"
    with pytest.raises(KandinskyError, match="searched"):
        loading.resolve("linked/../../root/linked", roots, "decoder")
