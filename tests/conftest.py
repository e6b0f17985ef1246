"""Shared fixtures: tiny models written once per session, ComfyUI's modules in-process, a real ComfyUI server.

The tests go by layer: core/ (kandinsky_core alone), node/ (the nodes in process), server/ (a real ComfyUI over
HTTP and its websocket), browser/ (ComfyUI's page in Chromium). Plain shared functions are in helpers.py."""
from __future__ import annotations

import importlib.util
import os
import socket
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network in tests: hub ids resolve on disk or fail fast

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(REPO))  # kandinsky_core alone, as a library

import tiny_models  # noqa: E402
from comfy_server import ComfyServer, comfyui_source, comfyui_version, prepare_comfyui  # noqa: E402

collect_ignore = ["tools"]  # the benchmark and the demo: tools, not tests


def pytest_report_header(config):
    return f"ComfyUI {comfyui_version()} from {comfyui_source()}"


@pytest.fixture(scope="session")
def models_root(tmp_path_factory) -> Path:
    """A ComfyUI models folder holding the tiny models under their hub names."""
    return tiny_models.build(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def models_dir(models_root) -> Path:
    return models_root / "diffusers"


@pytest.fixture(scope="session")
def depth_dir(models_root) -> Path:
    return models_root / "depth_estimation"


@pytest.fixture(scope="session")
def comfy(tmp_path_factory, models_dir, depth_dir):
    """This package imported as ComfyUI imports it, with ComfyUI's modules on sys.path (no server)."""
    comfy_dir = prepare_comfyui(tmp_path_factory.mktemp("comfy"))
    sys.path.insert(0, str(comfy_dir))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # as the server runs (--cpu); read when model_management is imported
    import folder_paths

    folder_paths.add_model_folder_path("diffusers", str(models_dir))
    folder_paths.add_model_folder_path("depth_estimation", str(depth_dir))
    spec = importlib.util.spec_from_file_location(
        "comfyui_kandinsky22", REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = package
    spec.loader.exec_module(package)
    return package


@pytest.fixture(scope="session")
def server(tmp_path_factory, models_root):
    # No picture copied by hand: the package provides the workflows' pictures in the input folder.
    srv = ComfyServer(tmp_path_factory.mktemp("server"), models_root, ["--preview-method", "auto"]).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def run_node(comfy):
    """Call a node's function as ComfyUI does (under inference_mode): run_node("Kandinsky22Txt2Img", ...)."""
    instances = {name: cls() for name, cls in comfy.NODE_CLASS_MAPPINGS.items()}

    def run(name, **inputs):
        with torch.inference_mode():
            return getattr(instances[name], instances[name].FUNCTION)(**inputs)

    return run


@pytest.fixture
def no_network(monkeypatch):
    """Every network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network use at run time")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
