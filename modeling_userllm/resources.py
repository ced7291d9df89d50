"""Where the package's data files are: the presets and the card templates.

In the repository they are the top-level folders `configuration/` and `hub_cards/`; a wheel
or a `pip install .` ships them inside the package as `modeling_userllm/presets/` and
`modeling_userllm/hub_cards/` (pyproject.toml maps the folders, they are not moved). Code
reads them through `package_data_dir`, which finds either layout.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Package data folder -> the repository folder it is built from.
PACKAGE_DATA = {"presets": "configuration", "hub_cards": "hub_cards"}


def package_data_dir(name: str) -> Path:
    """The folder of one kind of package data (`"presets"` or `"hub_cards"`).

    Installed from a wheel: `modeling_userllm/<name>` (found with `importlib.resources`);
    from the repository (editable install, or the source tree on `sys.path`): the repository
    folder it is built from.
    """
    if name not in PACKAGE_DATA:
        raise ValueError(f"unknown package data {name!r}; expected one of {sorted(PACKAGE_DATA)}")
    installed = files("modeling_userllm").joinpath(name)
    if installed.is_dir():
        return Path(str(installed))
    return REPO_ROOT / PACKAGE_DATA[name]


__all__ = ["PACKAGE_DATA", "package_data_dir"]
