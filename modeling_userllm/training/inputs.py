"""What a run read: the SHA-256 of every file of its data and features folders, kept in `OUTPUT/inputs.json`.

A path does not say that a folder still holds what it held. A features folder rebuilt on another machine can hold
other descriptions (greedy decoding in bfloat16 rounds differently on another CPU) or another MF table, and a data
folder prepared again with other settings other rows. A resumed run, and a run that takes its step 1 from another
(`step1_from`), compare the files they read now with those recorded and refuse to mix inputs, naming each file
that differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from ..features.store import atomic_write_json
from .arguments import PresetError

logger = logging.getLogger(__name__)

INPUTS_FILE = "inputs.json"
# Left out: the features manifest's timings differ on every rebuild (what it describes lies in the other files),
# the description cache only feeds descriptions.json, and `datasets` writes its own bookkeeping beside each split's
# rows (fingerprints, versions), which another `datasets` release writes otherwise.
UNREAD_FEATURE_PATHS = ("manifest.json", "description_cache")
DATASETS_BOOKKEEPING = ("state.json", "dataset_info.json", "dataset_dict.json")
DESCRIPTIONS_FILE = "features/descriptions.json"


def input_digests(data_dir: str | Path | None, features_dir: str | Path | None) -> dict[str, str]:
    """`{"data/<path>": sha256, "features/<path>": sha256}` for every file under the two folders (sorted)."""
    digests = {}
    for label, folder in (("data", data_dir), ("features", features_dir)):
        if folder is None:
            continue
        root = Path(folder)
        for path in sorted(path for path in root.rglob("*") if path.is_file()):
            relative = path.relative_to(root)
            if (label == "features" and relative.parts[0] in UNREAD_FEATURE_PATHS) or path.name in DATASETS_BOOKKEEPING:
                continue
            digests[f"{label}/{relative.as_posix()}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def write_inputs(output_dir: Path, digests: dict[str, str], data_dir: str | None, features_dir: str | None) -> None:
    atomic_write_json(output_dir / INPUTS_FILE, {"data_dir": data_dir, "features_dir": features_dir, "files": digests})


def check_same_inputs(digests: dict[str, str], recorded: Path, problem: str, *, only=None) -> None:
    """Raises `PresetError(problem: ...)` naming each file (of those `only(name)` keeps) whose digest differs from the
    one `recorded` (an inputs.json) holds, or that only one side has; warns when `recorded` does not exist (a run
    from before inputs were recorded, which cannot be checked)."""
    if not recorded.is_file():
        logger.warning("%s is missing (the run is older than inputs.json), so the data and features it read cannot "
                       "be compared with these", recorded)
        return
    theirs = json.loads(recorded.read_text(encoding="utf-8"))["files"]
    names = [name for name in sorted(set(digests) | set(theirs)) if only is None or only(name)]
    differences = [f"{name}: {'absent' if name not in digests else digests[name][:12]} here, "
                   f"{'absent' if name not in theirs else theirs[name][:12]} in {recorded}"
                   for name in names if digests.get(name) != theirs.get(name)]
    if differences:
        more = f" (and {len(differences) - 5} more)" if len(differences) > 5 else ""
        raise PresetError(f"{problem}: " + "; ".join(differences[:5]) + more + "; use the data and features folders "
                          "that run read (copy them from its machine), or train from the start")


def read_by_step1(prompt_form: str):
    """Which input files a step 1 reads, as a filter for `check_same_inputs`: the data (rows and titles), and the
    generated descriptions when its prompt writes them; a spliced prompt reads every feature."""
    if prompt_form == "text with titles":
        return lambda name: name.startswith("data/")
    if prompt_form == "text with descriptions":
        return lambda name: name.startswith("data/") or name == DESCRIPTIONS_FILE
    return None
