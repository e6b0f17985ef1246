"""What installing users and the Comfy Registry read: pyproject's metadata, the license, changelog and ignore file,
and no command of a Hugging Face CLI that no longer exists."""
import subprocess
import tomllib
import zipfile

from comfy_server import RELEASES
from helpers import REPO


def test_pyproject_holds_what_the_registry_reads():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    project, comfy = meta["project"], meta["tool"]["comfy"]
    assert "comfyui" not in project["name"]  # as the registry asks (and "comfyui-kandinsky22" is another pack's id)
    assert comfy["requires-comfyui"] == ">=" + RELEASES[-1].removeprefix("v")  # the oldest release the tests run
    assert project["version"] and project["description"] and project["urls"]["Repository"]
    assert project["license"] == {"file": "LICENSE"} and "GPLv3+" in project["classifiers"][0]
    assert {"PublisherId", "DisplayName", "Icon"} <= comfy.keys() and comfy["DisplayName"]
    required = [line for line in (REPO / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert project["dependencies"] == required


def test_license_changelog_and_comfyignore():
    license_text = (REPO / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in license_text and "Version 3, 29 June 2007" in license_text
    assert "0.1.0" in (REPO / "CHANGELOG.md").read_text()
    ignored = (REPO / ".comfyignore").read_text().split()
    assert {"tests/", ".ci/"} <= set(ignored)


def test_no_huggingface_cli_left():
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    old = "huggingface" + "-cli"  # huggingface_hub 1.0 removed it: `hf download` is today's command
    assert not [f for f in files if (REPO / f).is_file() and old in (REPO / f).read_text(errors="ignore")]


def test_the_registry_cli_validates_the_package():
    """`comfy node validate` (comfy-cli, the registry's own check before publishing; .ci/setup installs it)."""
    comfy = REPO / ".venv" / "tools" / "bin" / "comfy"
    assert comfy.is_file(), "no comfy-cli in .venv/tools: run `bash .ci/setup`"
    run = subprocess.run([str(comfy), "--skip-prompt", "--no-enable-telemetry", "node", "validate"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    said = run.stdout + run.stderr  # a field it cannot read (requires-comfyui, say) is only a warning, then dropped
    assert run.returncode == 0 and "validation checks passed" in said and "warning" not in said.lower(), said


def test_the_published_archive_keeps_the_blueprints_and_workflows(tmp_path):
    """`comfy node pack` (the registry CLI's archive, which reads .comfyignore) of the committed files."""
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive, check=True)
    comfy = REPO / ".venv" / "tools" / "bin" / "comfy"
    subprocess.run([str(comfy), "--skip-prompt", "--no-enable-telemetry", "node", "pack"], cwd=tmp_path,
                   capture_output=True, text=True, timeout=300, check=True)
    with zipfile.ZipFile(tmp_path / "node.zip") as packed:
        names = set(packed.namelist())
    shipped = {f"{folder}/{p.name}" for folder in ("subgraphs", "workflows") for p in (REPO / folder).glob("*.json")}
    assert shipped and shipped <= names, shipped - names
    assert "__init__.py" in names and not any(n.startswith(("tests/", ".ci/")) for n in names)
