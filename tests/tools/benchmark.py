"""Speed and memory of the node graph, run by ComfyUI's own executor, side by side with diffusers' pipelines.

    .venv/bin/python tests/tools/benchmark.py [--size tiny|mid|real] [--rounds N] [--threads N] [--models DIR]
                                             [--lowvram] [--profile] [--only TEXT]

Not a test (pytest does not collect tests/tools). Both sides load the same model folders (written once under
--models) with the same dtype, seeds and settings. The speed rows run in one process, interleaved (the side that goes
first alternates by round), and give the median and min-max over the rounds; the memory rows run each side in its own
fresh process, since a peak RSS cannot be reset. Sizes: tiny (tests/tiny_models.py: overhead), mid (a 110M-parameter
random decoder that dominates on a CPU at 256 px), real (random weights of the real Kandinsky 2.2 configs at 768 px,
fp16: meant for a GPU; they take about 10 GB of disk). One more table sets the graph's ComfyUI-native path
(Kandinsky 2.2 Conditioning, KSampler and VAEDecode on the decoder loader's MODEL and VAE) against its Text to Image
and MoVQ Decode nodes, the two graphs interleaved in the same executor.
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import functools
import gc
import inspect
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import logging  # noqa: E402
import warnings  # noqa: E402

import diffusers  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

# Quiet: load bars, the torch_dtype deprecation, and the warning that diffusers' pipeline never calls the Euler
# schedulers' scale_model_input (its Euler pictures are off; the timing is still the same work).
for lib in (diffusers, transformers):
    lib.utils.logging.set_verbosity_error()
    lib.utils.logging.disable_progress_bar()
warnings.filterwarnings("ignore", category=FutureWarning)

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))  # tiny_models, comfy_server
sys.path.append(str(REPO))  # kandinsky_core's scheduler table for the diffusers side; appended, so ComfyUI's
# own `nodes` module (its folder goes first) is not shadowed by this repository's `nodes` package.
import tiny_models  # noqa: E402
from comfy_server import PACKAGE_NAME, as_novram, prepare_comfyui  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
DTYPE = "fp16" if CUDA else "fp32"  # what the loader's `auto` picks; given explicitly so both sides match
WORKFLOW = json.loads((REPO / "workflows" / "api" / "txt2img.json").read_text())
PROMPT, NEGATIVE = (WORKFLOW["3"]["inputs"][k] for k in ("prompt", "negative_prompt"))
PX = {"tiny": 64, "mid": 256, "real": 768}
PRIOR_STEPS, STEPS, FEW_STEPS = 25, 50, 20  # DDPM (default) at 50, the other schedulers at 20
GUIDANCE = 4.0


# ---- model folders: both sides read these very files -------------------------------------------------------------
def _unet(channels, layers, embed, **kw):
    from diffusers import UNet2DConditionModel

    n = len(channels) - 1  # the real layout: a plain ResNet level on top, cross-attention below
    return UNet2DConditionModel(
        in_channels=4, out_channels=8, block_out_channels=channels, layers_per_block=layers, attention_head_dim=64,
        down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * n,
        up_block_types=("SimpleCrossAttnUpBlock2D",) * n + ("ResnetUpsampleBlock2D",),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", encoder_hid_dim=embed, encoder_hid_dim_type="image_proj",
        addition_embed_type="image", resnet_time_scale_shift="scale_shift", **kw)


def _movq(channels, layers):
    from diffusers import VQModel

    return VQModel(block_out_channels=channels, layers_per_block=layers, in_channels=3, out_channels=3,
                   latent_channels=4, vq_embed_dim=4, num_vq_embeddings=16384, norm_num_groups=32, norm_type="spatial",
                   down_block_types=["DownEncoderBlock2D"] * 3 + ["AttnDownEncoderBlock2D"],
                   up_block_types=["AttnUpDecoderBlock2D"] + ["UpDecoderBlock2D"] * 3, scaling_factor=0.18215)


def _real_prior():
    """kandinsky-community/kandinsky-2-2-prior's configs (prior, text_encoder, image_encoder, scheduler); the tiny
    byte-level tokenizer stands in for CLIP's vocabulary, which the text encoder keeps at its real size."""
    from diffusers import KandinskyV22PriorPipeline, PriorTransformer, UnCLIPScheduler
    from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    tokenizer = tiny_models.make_tokenizer()
    vocab = len(tokenizer)
    half = lambda m: m.half()  # noqa: E731 - built one at a time, halved at once: 7 GB less at the peak
    return KandinskyV22PriorPipeline(
        prior=half(PriorTransformer(num_attention_heads=32, attention_head_dim=64, num_layers=20, embedding_dim=1280,
                                    num_embeddings=77, additional_embeddings=4, added_emb_type="prd",
                                    encoder_hid_proj_type="linear", time_embed_act_fn="silu")),
        text_encoder=half(CLIPTextModelWithProjection(CLIPTextConfig(
            hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32, projection_dim=1280,
            vocab_size=49408, max_position_embeddings=77, hidden_act="gelu", bos_token_id=vocab - 2,
            eos_token_id=vocab - 1, pad_token_id=vocab - 1))),
        image_encoder=half(CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=1664, image_size=224, intermediate_size=8192, num_attention_heads=16, num_hidden_layers=48,
            patch_size=14, projection_dim=1280, hidden_act="gelu"))),
        tokenizer=tokenizer,
        scheduler=UnCLIPScheduler(clip_sample=True, clip_sample_range=10.0, num_train_timesteps=1000,
                                  prediction_type="sample", variance_type="fixed_small_log"),
        image_processor=CLIPImageProcessor(crop_size=224, size=224, do_center_crop=True, do_normalize=True,
                                           do_resize=True, resample=3, image_mean=[0.48145466, 0.4578275, 0.40821073],
                                           image_std=[0.26862954, 0.26130258, 0.27577711]))


def _decoder(size):
    from diffusers import KandinskyV22Pipeline

    pipe = tiny_models.make_decoder("text2img")  # the real decoder's scheduler config
    if size == "mid":
        return KandinskyV22Pipeline(unet=_unet((128, 256, 384, 512), 2, tiny_models.EMBED, cross_attention_dim=512),
                                    movq=_movq([64, 128, 128, 256], 1), scheduler=pipe.scheduler)
    if size == "real":  # kandinsky-community/kandinsky-2-2-decoder's unet and movq configs
        return KandinskyV22Pipeline(unet=_unet((384, 768, 1152, 1536), 3, 1280, cross_attention_dim=768,
                                               addition_embed_type_num_heads=64, sample_size=64).half(),
                                    movq=_movq([128, 256, 256, 512], 2).half(), scheduler=pipe.scheduler)
    return pipe


def build_models(size: str, root: Path) -> Path:
    """<root>/<size>/diffusers holding the prior and the text-to-image decoder under their hub names."""
    target = root / size / "diffusers"
    for i, kind in enumerate(("prior", "text2img")):
        folder = target / tiny_models.NAMES[kind]
        if not (folder / "model_index.json").is_file():
            print(f"writing the {size} {kind} models to {folder} (once)", flush=True)
            torch.manual_seed(i)
            if kind == "prior":
                pipe = _real_prior() if size == "real" else tiny_models.make_prior()
            else:
                pipe = _decoder(size)
            pipe.save_pretrained(folder, safe_serialization=True)
            del pipe
            gc.collect()
    return target


# ---- the two sides -----------------------------------------------------------------------------------------------
class _Server:
    """The part of ComfyUI's PromptServer that the executor and the progress hook use; it notes executed nodes."""
    client_id = last_node_id = last_prompt_id = None

    def __init__(self):
        self.executed = []

    def send_sync(self, event, data, sid=None):
        if event == "executing" and data.get("node") is not None:
            self.executed.append(data["node"])


class Graph:
    """workflows/api/txt2img.json run by ComfyUI's PromptExecutor in this process, with its caching, as main.py's
    prompt worker runs it; validation (the /prompt handler's part) is timed too."""
    name = "graph"

    def __init__(self, models: Path, workdir: Path, size: str, lowvram: bool = False):
        comfy_dir = prepare_comfyui(workdir)
        sys.path.insert(0, str(comfy_dir))
        import comfy.cli_args

        comfy.cli_args.args.cpu = not CUDA  # both read when comfy.model_management is first imported
        comfy.cli_args.args.lowvram = lowvram
        import comfy.model_management
        import comfy.utils
        import execution
        import folder_paths
        import nodes

        folder_paths.add_model_folder_path("diffusers", str(models))
        folder_paths.set_output_directory(tempfile.mkdtemp(prefix="k22-bench-graph-"))
        link = workdir / "custom_nodes" / PACKAGE_NAME  # the folder name ComfyUI imports the package under
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        if not asyncio.run(nodes.load_custom_node(str(link))):
            raise SystemExit("ComfyUI could not load this package: see the log above.")
        self.mm, self.execution, self.server = comfy.model_management, execution, _Server()
        # this package's bridge to ComfyUI, under the module name ComfyUI loaded it as
        self.bridge = next(m for n, m in sys.modules.items() if n.endswith("nodes.comfy_bridge"))

        def progress(value, total, preview, prompt_id=None, node_id=None):  # main.py's hijack_progress
            comfy.model_management.throw_exception_if_processing_interrupted()
            node = node_id or self.server.last_node_id
            self.server.send_sync("progress", {"value": value, "max": total, "node": node})

        comfy.utils.set_progress_bar_global_hook(progress)
        logging.getLogger().setLevel(logging.WARNING)  # ComfyUI's "Requested to load ..." lines
        comfy.utils.set_progress_bar_enabled(False)  # KSampler's console bar (the hook above still runs)
        args = comfy.cli_args.args  # main.py's executor: v0.8.0 takes cache_args, 0.3.64 a cache_size
        cache = {"cache_args": {"lru": args.cache_lru, "ram": args.cache_ram}} if "cache_args" in \
            inspect.signature(execution.PromptExecutor).parameters else {}
        self.executor = execution.PromptExecutor(self.server, **cache)
        self.px, self.settings = PX[size], {}

    def graph(self, seed, scheduler="default", steps=STEPS, ksampler=False):
        g = copy.deepcopy(WORKFLOW)
        g["1"]["inputs"]["dtype"] = DTYPE
        g["2"]["inputs"].update(dtype=DTYPE, **self.settings)
        g["3"]["inputs"].update(steps=PRIOR_STEPS, guidance_scale=GUIDANCE)
        g["4"]["inputs"].update(width=self.px, height=self.px, steps=steps, seed=seed, scheduler=scheduler,
                                guidance_scale=GUIDANCE)
        if ksampler:  # the ComfyUI-native path in nodes 4 and 5: the loader's MODEL and VAE, the sampler named as
            # the scheduler, its "normal" schedule
            g["7"] = {"class_type": "Kandinsky22Conditioning", "inputs": {"positive": ["3", 0], "negative": ["3", 1]}}
            g["8"] = {"class_type": "EmptyLatentImage",
                      "inputs": {"width": self.px, "height": self.px, "batch_size": 1}}
            g["4"] = {"class_type": "KSampler", "inputs": {
                "model": ["2", 2], "positive": ["7", 0], "negative": ["7", 1], "latent_image": ["8", 0], "seed": seed,
                "steps": steps, "cfg": GUIDANCE, "sampler_name": scheduler, "scheduler": "normal", "denoise": 1.0}}
            g["5"] = {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["2", 3]}}
        return g

    def run(self, graph, outputs=None) -> list[str]:
        ok, error, output_nodes, node_errors = asyncio.run(
            self.execution.validate_prompt(uuid.uuid4().hex, graph, None))
        if not ok:
            raise RuntimeError(f"invalid graph: {error} {node_errors}")
        self.server.executed = []
        self.executor.execute(graph, uuid.uuid4().hex, {"client_id": "benchmark"}, outputs or output_nodes)
        if not self.executor.success:
            raise RuntimeError(self.executor.status_messages[-1])
        return self.server.executed

    def unload(self):  # what /free does: drop the cache and every loaded model
        self.executor.reset()
        self.mm.unload_all_models()
        gc.collect()

    def load(self):
        self.run(self.graph(0), outputs=["1", "2"])

    def image(self, seed, scheduler="default", steps=STEPS, prior=False, ksampler=False):
        executed = self.run(self.graph(seed, scheduler, steps, ksampler))
        if "4" not in executed or ("3" in executed) != prior:  # the prior runs after a load, else comes cached
            raise RuntimeError(f"expected the decoder{' and the prior' * prior} to run, ran nodes {executed}")

    def output(self, node: str) -> list:
        entry = self.executor.caches.outputs.get(node)
        return getattr(entry, "outputs", entry)  # v0.8.0 caches a CacheEntry, 0.3.64 the outputs alone

    def pixels(self):
        return (self.output("5")[0][0][0].float().cpu().numpy() * 255).round()

    def unet_load(self, share: float | None) -> types.SimpleNamespace:
        """A side that runs the cached graph's Text to Image sampling (the decoder and embeddings its nodes made) with
        the UNet loaded by ComfyUI's own patcher whole (``share`` None) or in part (that share of its size: the layers
        left are cast as they run). On a CPU both keep every weight in RAM: this times the casting."""
        from kandinsky_core import sampling

        decoder, (positive, negative) = self.output("2")[0][0], [o[0] for o in self.output("3")[:2]]
        patcher, device = self.bridge.patcher(decoder.unet), self.mm.get_torch_device()

        def image(seed, scheduler="default", steps=STEPS, prior=False):
            patcher.detach()
            if share is None:
                patcher.load(device, full_load=True)
            else:
                patcher.load(device, lowvram_model_memory=int(patcher.model_size() * share))
            sampling.txt2img(decoder, positive, negative, height=self.px, width=self.px, steps=steps, seed=seed,
                             scheduler=scheduler)

        return types.SimpleNamespace(name="whole" if share is None else "partial", image=image)

    def option(self, name):
        if name == "channels_last" and self.bridge.channels_last():  # the loader's layout here: the graph as it runs
            return
        self.settings = {name: True} if name else {}
        if name:
            self.run(self.graph(0), outputs=["2"])  # reload the decoder with it, untimed


def pipelines() -> dict:
    """diffusers' Kandinsky 2.2 pipeline classes, imported on first use (diffusers imports lazily). Each memory run
    imports them before its baseline, the graph's too: they import the model classes both sides load (this package
    imports them when it loads, 42 MiB at mid size that the graph's side would count as its work)."""
    return {"prior": diffusers.KandinskyV22PriorPipeline, "text2img": diffusers.KandinskyV22Pipeline}


class Diffusers:
    """KandinskyV22PriorPipeline + KandinskyV22Pipeline from the same folders, the PNG saved as SaveImage does."""
    name = "diffusers"

    def __init__(self, models: Path, size: str, lowvram: bool = False):
        self.models, self.px, self.lowvram, self.classes = models, PX[size], lowvram, pipelines()
        self.out = Path(tempfile.mkdtemp(prefix="k22-bench-diffusers-"))
        self.prior = self.decoder = self.embeds = self.unet = None

    def unload(self):
        self.prior = self.decoder = self.embeds = self.unet = None
        gc.collect()
        if CUDA:
            torch.cuda.empty_cache()

    def load(self):
        dtype = torch.float16 if DTYPE == "fp16" else torch.float32
        pipes = []
        for kind, cls in self.classes.items():
            pipe = cls.from_pretrained(self.models / tiny_models.NAMES[kind], torch_dtype=dtype, use_safetensors=True)
            pipe.set_progress_bar_config(disable=True)
            if self.lowvram:
                pipe.enable_model_cpu_offload()  # each model on the GPU only while it runs
            else:
                pipe.to(DEVICE)
            pipes.append(pipe)
        self.prior, self.decoder = pipes
        self.config, self.unet = dict(self.decoder.scheduler.config), self.decoder.unet

    def image(self, seed, scheduler="default", steps=STEPS, prior=False):
        from kandinsky_core.schedulers import SCHEDULERS  # the class and overrides each choice means

        if prior or self.embeds is None:
            out = self.prior(PROMPT, negative_prompt=NEGATIVE, guidance_scale=GUIDANCE,
                             num_inference_steps=PRIOR_STEPS, generator=torch.Generator("cpu").manual_seed(42))
            self.embeds = out.image_embeds, out.negative_image_embeds
        cls, overrides = SCHEDULERS[scheduler]
        self.decoder.scheduler = getattr(diffusers, cls or self.config["_class_name"]).from_config(self.config,
                                                                                                  **overrides)
        self.last = self.decoder(image_embeds=self.embeds[0], negative_image_embeds=self.embeds[1], width=self.px,
                                 height=self.px, num_inference_steps=steps, guidance_scale=GUIDANCE,
                                 generator=torch.Generator("cpu").manual_seed(seed)).images[0]
        self.last.save(self.out / f"k22_{seed}.png", compress_level=4)

    def pixels(self):
        import numpy as np

        return np.asarray(self.last).astype("float64")

    def option(self, name):
        self.decoder.unet = self.unet.to(memory_format=torch.channels_last if name == "channels_last"
                                         else torch.contiguous_format)
        if name == "compile":
            self.decoder.unet = torch.compile(self.unet)


# ---- measuring ---------------------------------------------------------------------------------------------------
def timed(fn, *args, **kwargs) -> float:
    if CUDA:
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(*args, **kwargs)
    if CUDA:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(s, what: str, seed: int, kwargs: dict) -> float:
    """Seconds of one piece of work: a cold load, an image, or an image with a speed option set (untimed)."""
    if what == "load":
        s.unload()
        return timed(s.load)
    if what != "image":
        s.option(what)
        if what == "compile":
            s.image(seed + 10**6)  # compiles, untimed
    try:
        return timed(s.image, seed, **kwargs)
    finally:
        if what != "image":
            s.option(None)


def high_water() -> int:
    """This process's peak RSS. Not ru_maxrss: Linux starts that at the parent's RSS when a child is forked."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def child(side: str, models: Path, workdir: Path, size: str, lowvram: bool) -> None:
    """One side alone in a fresh process: load, one image; its memory as JSON on the last line."""
    import threading

    proc, stop, peak = psutil.Process(), threading.Event(), [0]

    def sample():  # the peak while loading and painting, apart from the imports' own transient peak
        while not stop.wait(0.002):
            peak[0] = max(peak[0], proc.memory_info().rss)

    s = Diffusers(models, size, lowvram) if side == "diffusers" else Graph(models, workdir, size, lowvram)
    if side == "novram":
        as_novram(s.mm)
    pipelines()
    base = proc.memory_info().rss  # torch, diffusers' pipelines (the graph: also ComfyUI, this package) imported
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    s.load()
    s.image(1, steps=2, prior=True)  # each step frees what the last one took: the peak needs no more steps
    stop.set()
    sampler.join()
    result = {"imports": base, "peak_rss": high_water(),
              "above_imports": max(peak[0], proc.memory_info().rss) - base,
              "cuda_peak": torch.cuda.max_memory_allocated() if CUDA else None}
    gc.collect()
    before = proc.memory_info().rss
    s.unload()  # as /free does (ComfyUI) or dropping the pipelines (diffusers), then the same load and image again
    s.load()
    s.image(2, steps=2, prior=True)  # weights are read from mmap'd files: they count once an image touched them
    gc.collect()
    print(json.dumps({**result, "reload": proc.memory_info().rss - before}))


def memory(side: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", side, "--size", args.size, "--models", str(args.models),
           "--threads", str(torch.get_num_threads())]
    proc = subprocess.run(cmd + ["--lowvram"] * args.lowvram, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{side} memory run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def profile(sides) -> None:
    """cProfile of a first image and of a new-seed image per side: where the time goes besides the models."""
    import cProfile
    import pstats

    for s in sides:
        for seed, what in ((7, "load + first image"), (8, "new decoder seed")):
            if seed == 7:
                s.unload()
            prof = cProfile.Profile()
            prof.enable()
            if seed == 7:
                s.load()
            s.image(seed, prior=seed == 7)
            prof.disable()
            print(f"\n#### profile: {s.name}, {what}")
            pstats.Stats(prof).sort_stats("cumulative").print_stats(35)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=list(PX), default="tiny")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", type=Path, default=Path(tempfile.gettempdir()) / "k22-benchmark",
                        help="where the random-weight model folders (and a copy of ComfyUI) are written once")
    parser.add_argument("--lowvram", action="store_true",
                        help="GPU only: ComfyUI's --lowvram against diffusers' enable_model_cpu_offload")
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: its own choice); 1 keeps the "
                        "timing steadier on a machine that other work shares")
    parser.add_argument("--profile", action="store_true", help="print cProfile tables instead of timing")
    parser.add_argument("--only", help="run only the speed rows whose label holds this text (no memory rows)")
    parser.add_argument("--child", choices=["graph", "diffusers", "novram"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.lowvram and not CUDA:
        raise SystemExit("--lowvram compares GPU offloading: it needs a CUDA GPU.")
    if args.size == "real" and not CUDA and not args.child:
        print("warning: --size real is meant for a GPU; on a CPU it takes hours.", flush=True)
    models, workdir = build_models(args.size, args.models), args.models / "comfyui"
    if args.child:
        return child(args.child, models, workdir, args.size, args.lowvram)

    graph, diff = Graph(models, workdir, args.size, args.lowvram), Diffusers(models, args.size, args.lowvram)
    for s in (graph, diff):  # warm-up, untimed: lazy imports, allocator, caches of the OS
        s.load()
        s.image(1, prior=True)
    if args.profile:
        return profile((graph, diff))

    def apart(layout):  # 8-bit values: float rounding can tip one over a half
        d = abs(graph.pixels() - diff.pixels())
        return f"{d.max():.0f}/255 ({int((d > 0).sum())} of {d.size} values) {layout}"

    same = [apart("as each side loads (on a CPU the graph's UNet is channels_last)")]
    for s in (graph, diff):  # the same layout on both sides: the same sums, in the same order
        s.option("channels_last")
        s.image(2)
        s.option(None)
    same.append(apart("with both UNets channels_last"))

    from kandinsky_core.schedulers import NAMES

    ksampler = types.SimpleNamespace(name="ksampler", image=functools.partial(graph.image, ksampler=True))
    ksampler.image(1, scheduler="euler", steps=2)  # warm-up, untimed: ComfyUI's sampling and VAE code

    options = ["channels_last"] + ["compile"] * CUDA  # torch.compile only on CUDA (loading.speed_up)
    load = "cold start: load the models (loader nodes / from_pretrained)"
    first = "first image after the load: prior + decoder + MoVQ + PNG"
    both = "load + first image (on a GPU the loaders leave the move to it to the first image)"
    work = [(load, "load", {}), (first, "image", {"prior": True}),
            ("new decoder seed (graph: prior from ComfyUI's cache; diffusers: decoder pipeline only)", "image", {})]
    work += [(f"scheduler {n}, {FEW_STEPS} steps", "image", {"scheduler": n, "steps": FEW_STEPS})
             for n in NAMES if n != "default"]
    work += [(f"{o}, {STEPS} steps", o, {}) for o in options]
    work += [(f"KSampler (euler, normal) + VAEDecode vs Text to Image (scheduler euler) + MoVQ Decode, {FEW_STEPS} "
              "steps, prior cached, each with its PNG", "image", {"scheduler": "euler", "steps": FEW_STEPS},
              (ksampler, graph))]  # a row's own two sides, else the graph and diffusers
    work += [(f"UNet loaded in part (a third of its size, ComfyUI's own partial load) vs whole: Text to Image's "
              f"sampling, {FEW_STEPS} steps, with the load", "image", {"steps": FEW_STEPS},
              (graph.unet_load(1 / 3), graph.unet_load(None)))]
    if args.only:
        work = [w for w in work if args.only in w[0]]
    rows, seed = ({} if args.only else {load: {}, first: {}, both: {}}), 100
    for r in range(args.rounds):
        order = (graph, diff) if r % 2 == 0 else (diff, graph)
        print(f"round {r + 1}/{args.rounds}", flush=True)
        for row, what, kwargs, *pair in work:
            seed += 1
            sides = pair[0] if pair else (graph, diff)
            for s in (sides if r % 2 == 0 else sides[::-1]):
                done = rows.setdefault(row, {}).setdefault(s.name, [])
                if isinstance(done, str):
                    continue
                try:
                    done.append(measure(s, what, seed, kwargs))
                except TypeError as exc:  # diffusers' pipeline passes generator= to every scheduler's step
                    if "generator" not in str(exc):
                        raise
                    rows[row][s.name] = f"fails: {exc}"
        for s in order if not args.only else ():
            rows[both].setdefault(s.name, []).append(rows[load][s.name][-1] + rows[first][s.name][-1])
            mem = memory(s.name, args)
            for key, label in MEMORY_ROWS.items():
                if mem[key] is not None:
                    rows.setdefault(label, {}).setdefault(s.name, []).append(mem[key] / 2**20)
        if not args.only and not CUDA:  # the graph with every layer cast as it runs, against its whole load above
            mem = memory("novram", args)
            for key in ("peak_rss", "above_imports"):
                sides = rows.setdefault(f"{MEMORY_ROWS[key]}: every layer cast as it runs (--novram's budget, "
                                        f"emulated on the CPU) vs loaded whole", {})
                sides.setdefault("novram", []).append(mem[key] / 2**20)
                sides.setdefault("graph", []).append(rows[MEMORY_ROWS[key]]["graph"][-1])
    report(args, rows, same)


MEMORY_ROWS = {"imports": "RSS after the imports (torch, diffusers' pipelines; the graph: also ComfyUI, this package)",
               "peak_rss": "peak RSS of a fresh process: imports, load, one image",
               "above_imports": "peak RSS while loading and painting, above the RSS after imports",
               "cuda_peak": "peak CUDA memory (torch.cuda.max_memory_allocated)",
               "reload": "RSS kept after an unload (/free) + reload + image of the same models"}


def unit_of(row: str) -> str:
    return "MiB" if "RSS" in row or "memory" in row else "s"


def report(args, rows, same) -> None:
    def cell(xs, unit):
        if isinstance(xs, str):
            return xs
        if unit == "MiB":
            return f"{statistics.median(xs):.0f} MiB ({min(xs):.0f}-{max(xs):.0f})"
        return f"{statistics.median(xs):.3f} s ({min(xs):.3f}-{max(xs):.3f})"

    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if line.startswith("Model name")), "?")
    where = torch.cuda.get_device_name() if CUDA else f"CPU {cpu}, {os.cpu_count()} cores, torch threads " \
                                                      f"{torch.get_num_threads()}"
    print(f"\nsize {args.size}: {PX[args.size]}x{PX[args.size]} px, prior {PRIOR_STEPS} steps, guidance {GUIDANCE}, "
          f"batch 1, {DTYPE} on {where}, {args.rounds} rounds, {time.strftime('%Y-%m-%d')}, load average at the "
          f"end {os.getloadavg()[0]:.1f}; "
          f"pixels of the two sides differ by at most {'; by '.join(same)}\n")
    print("| measure | graph: median (min-max) | diffusers: median (min-max) | graph / diffusers |")
    print("|---|---|---|---|")
    pairs = {row: sides for row, sides in rows.items() if "diffusers" not in sides}  # rows of their own two sides
    for row, sides in rows.items():
        if row in pairs:
            continue
        unit = unit_of(row)
        g, d = sides.get("graph", "-"), sides.get("diffusers", "-")
        growth = "kept after" in row  # a few MiB either way, the sign by chance: no ratio
        ok = not isinstance(g, str) and not isinstance(d, str) and not growth
        ratio = f"{statistics.median(g) / statistics.median(d):.2f}" if ok else "-"
        print(f"| {row} | {cell(g, unit)} | {cell(d, unit)} | {ratio} |")
    if not CUDA:
        print("| torch.compile | not run: CUDA only | not run | - |")
        print("| --lowvram / enable_model_cpu_offload | not run: GPU only | not run | - |")
    for row, sides in pairs.items():  # the first side against the second, per round
        (a_name, a), (b_name, b) = sides.items()
        ratios = [x / y for x, y in zip(a, b)]
        unit = unit_of(row)
        print(f"\n| graph, two ways | {a_name}: median (min-max) | {b_name}: median (min-max) | {a_name} / {b_name}, "
              f"per round: median (min-max) |\n|---|---|---|---|\n| {row} | {cell(a, unit)} | {cell(b, unit)} | "
              f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |")


if __name__ == "__main__":
    main()
