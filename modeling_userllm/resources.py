"""Where the package data is: presets and card templates, `configuration/` and `hub_cards/` in the
repository, `modeling_userllm/presets/` and `modeling_userllm/hub_cards/` in a wheel (pyproject.toml)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Package data folder -> the repository folder it is built from.
PACKAGE_DATA = {"presets": "configuration", "hub_cards": "hub_cards"}


def package_data_dir(name: str) -> Path:
    """The folder of `"presets"` or `"hub_cards"`: inside the installed package, else in the repository."""
    if name not in PACKAGE_DATA:
        raise ValueError(f"unknown package data {name!r}; expected one of {sorted(PACKAGE_DATA)}")
    installed = files("modeling_userllm").joinpath(name)
    if installed.is_dir():
        return Path(str(installed))
    return REPO_ROOT / PACKAGE_DATA[name]


__all__ = ["PACKAGE_DATA", "package_data_dir"]
