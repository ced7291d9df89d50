"""The installable package: a built wheel works outside the repository.

The presets (`configuration/`) and card templates (`hub_cards/`) are not moved: pyproject.toml
maps them into the package as `modeling_userllm/presets` and `modeling_userllm/hub_cards`.
"""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from modeling_userllm.resources import PACKAGE_DATA, package_data_dir

# What a build reads from the repository.
SOURCES = ("pyproject.toml", "README.md", "modeling_userllm", *PACKAGE_DATA.values())

OUTSIDE_THE_REPOSITORY = """
import json, sys
from pathlib import Path
import modeling_userllm
from modeling_userllm.resources import package_data_dir
from modeling_userllm.training import parse_arguments
from modeling_userllm.training.pipeline import run_training
from modeling_userllm.hub import prepare_upload_folder

package = Path(modeling_userllm.__file__).resolve().parent
assert sys.prefix in str(package), package  # the installed wheel, not the repository
assert package_data_dir("presets") == package / "presets", package_data_dir("presets")
run = parse_arguments([  # the default preset (toy.yaml), read from the wheel
    "--output_dir", "run", "--toy_num_users", "30", "--toy_num_items", "48", "--toy_hidden_size", "32",
    "--max_item_tokens", "8", "--step1_max_steps", "2", "--step2_max_steps", "2", "--max_eval_rows", "40",
    "--eval_splits", "valid", "--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no",
])
metrics = run_training(run)
folder = prepare_upload_folder("run/model", "upload", repo_id="org/userllm-toy")  # the card template from the wheel
card = (folder / "README.md").read_text()
assert "org/userllm-toy" in card and "valid" in card, card[:2000]
print("RESULT=" + json.dumps({"package": str(package), "files": sorted(p.name for p in folder.iterdir()),
                              "auc": metrics["valid"]["auc"]}))
"""


def listed_packages() -> set[str]:
    return set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])


def test_every_subpackage_and_data_folder_is_listed_in_pyproject():
    listed = listed_packages()
    package_root = REPO_ROOT / "modeling_userllm"
    for init in package_root.rglob("__init__.py"):
        name = ".".join(("modeling_userllm", *init.parent.relative_to(package_root).parts))
        assert name in listed, f"{name} is missing from [tool.setuptools] packages in pyproject.toml"
    for package, folder in PACKAGE_DATA.items():
        for directory in [REPO_ROOT / folder, *(REPO_ROOT / folder).rglob("*/")]:
            if directory.is_dir() and directory.name != "__pycache__":
                name = ".".join(("modeling_userllm", package, *directory.relative_to(REPO_ROOT / folder).parts))
                assert name in listed, f"{name} ({directory}) is missing from [tool.setuptools] packages"


def test_the_wheel_leaves_out_the_demo_app_and_the_experiments_harness():
    for folder in ("demo", "experiments"):
        assert not [name for name in listed_packages() if name.split(".")[0] == folder or f".{folder}" in name]


def test_package_data_is_found_in_the_repository():
    assert (package_data_dir("presets") / "toy.yaml").is_file()
    assert (package_data_dir("hub_cards") / "model_card.md").is_file()


# Variables that would put the checkout (or the caller's environment) on a subprocess's path: with
# PYTHONPATH on a checkout holding userllm.egg-info, pip sees the distribution as installed and skips the wheel.
LEAKING_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV", "PIP_TARGET", "PIP_PREFIX")


def clean_environment(**extra: str) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in LEAKING_VARIABLES}
    return {**env, **extra}


def run(command: list[str], cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs a command of the packaging test, never with the caller's path variables (`LEAKING_VARIABLES`)."""
    env = clean_environment(**{key: value for key, value in (env or {}).items() if key not in LEAKING_VARIABLES})
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, f"{' '.join(map(str, command))}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_wheel_installs_in_a_fresh_venv_and_trains_outside_the_repository(tmp_path):
    """Builds the wheel from a copy of the sources, installs it (with its dependencies) in a new
    virtual environment, and runs a short training and the hub-folder preparation elsewhere."""
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
         "-q"], cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("userllm-*.whl"))

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    # torch first, at the version this environment has (constraints-cpu.txt pins it).
    run([str(python), "-m", "pip", "install", "-q", "-c", str(REPO_ROOT / "constraints-cpu.txt"), "torch"], cwd=tmp_path)
    run([str(python), "-m", "pip", "install", "-q", "-c", str(REPO_ROOT / "constraints-cpu.txt"), str(wheel)], cwd=tmp_path)

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    result = run([str(python), "-c", OUTSIDE_THE_REPOSITORY], cwd=workdir, env={"OMP_NUM_THREADS": "1"})
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT="))
    assert str(venv) in line and str(REPO_ROOT) not in line, line
    assert "pipeline_userllm.py" in line and "README.md" in line


def test_packaging_subprocesses_never_see_the_callers_pythonpath(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    monkeypatch.setenv("VIRTUAL_ENV", str(REPO_ROOT))
    probe = "import os; print(os.environ.get('PYTHONPATH'), os.environ.get('VIRTUAL_ENV'))"
    for env in (None, {"OMP_NUM_THREADS": "1"}, {"PYTHONPATH": str(REPO_ROOT)}):
        printed = run([sys.executable, "-c", probe], cwd=tmp_path, env=env).stdout
        assert printed.split() == ["None", "None"], printed
