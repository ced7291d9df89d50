"""Unfinished runs' checkpoints carried in git, so that a campaign of many hours continues on another machine.

A session's machine may be gone by the next session; the repository is what travels. `save_checkpoints` writes, for
each unfinished training run under a runs folder, what `--resume` needs to continue it into one commit without
parent on a side branch (`campaign-checkpoints`), replaced at each save, so that only the latest checkpoints are ever
cloned and main's history carries none of them. `restore_checkpoints` writes them back on the next machine.

    python examples/carry_checkpoints.py save --runs /work/runs --repo .      # before the session ends
    python examples/carry_checkpoints.py restore --runs /work/runs --repo .   # on the next machine, after setup

A training run is a folder holding `run_config.json` (`OUT` of `examples/train.py`, or `train/` of a runner's run);
it is finished once it holds `metrics.json`. Of an unfinished run are carried: run_config.json, inputs.json, the
runner's `run.json` and `invocations.json` one level up, each finished step's result (`step*/final/`) and the
unfinished step's last *complete* checkpoint (`last_complete_checkpoint`: one being written as the save runs is left
out, an earlier one is taken).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from modeling_userllm.training.arguments import RUN_CONFIG_FILE
from modeling_userllm.training.inputs import INPUTS_FILE
from modeling_userllm.training.trainer import FINAL_FOLDER, last_complete_checkpoint

from .runner import INVOCATIONS_FILE

CARRY_BRANCH = "campaign-checkpoints"
# The runner's files one level above a training run: its record and the list of the run's invocations.
RUNNER_FILES = ("run.json", INVOCATIONS_FILE)
FINISHED_MARKER = "metrics.json"


def unfinished_runs(runs: Path) -> list[Path]:
    """The training runs under `runs` (folders holding run_config.json) that hold no metrics.json, sorted."""
    return sorted(config.parent for config in runs.rglob(RUN_CONFIG_FILE)
                  if not (config.parent / FINISHED_MARKER).is_file()
                  and not (config.parent.parent / FINISHED_MARKER).is_file())


def _carried_paths(run: Path) -> Iterator[Path]:
    """The files and folders of one unfinished run that `--resume` continues from."""
    for name in (RUN_CONFIG_FILE, INPUTS_FILE):
        if (run / name).is_file():
            yield run / name
    for name in RUNNER_FILES:
        if (run.parent / name).is_file():
            yield run.parent / name
    for step in sorted(path for path in run.glob("step*-*") if path.is_dir()):
        if (step / FINAL_FOLDER).is_dir():  # a finished step is loaded from its result, not its checkpoints
            yield step / FINAL_FOLDER
        elif (checkpoint := last_complete_checkpoint(step)) is not None:
            yield Path(checkpoint)


def _git(repo: Path, *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(["git", "-C", str(repo), *args], input=stdin, capture_output=True,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def save_checkpoints(runs: str | Path, repo: str | Path, branch: str = CARRY_BRANCH) -> list[Path]:
    """Replaces `branch` of the git repository `repo` with one parentless commit of every unfinished run's carried
    files, at their paths relative to `runs`; returns the runs carried (none: the branch is left as it was).

    The repository's HEAD, index and work tree are not touched (a separate index, `git commit-tree`)."""
    runs, repo = Path(runs).resolve(), Path(repo).resolve()
    carried = {run: list(_carried_paths(run)) for run in unfinished_runs(runs)}
    if not carried:
        return []
    with tempfile.TemporaryDirectory(prefix="userllm-carry-") as scratch:
        tree = Path(scratch) / "tree"
        for sources in carried.values():
            for source in sources:
                target = tree / source.relative_to(runs)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    if source.is_dir():
                        shutil.copytree(source, target)
                    else:
                        shutil.copy2(source, target)
                except (FileNotFoundError, shutil.Error) as error:  # the Trainer rotated a checkpoint away meanwhile
                    raise RuntimeError(f"{source} changed while it was copied ({error}); save again") from error
        index = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        _git(repo, f"--work-tree={tree}", "add", "--all", "--force", ".", env=index)
        tree_id = _git(repo, "write-tree", env=index).decode().strip()
        message = f"{len(carried)} unfinished run(s) of {runs}\n\n" + "".join(f"{run.relative_to(runs)}\n"
                                                                             for run in carried)
        commit = _git(repo, "commit-tree", tree_id, stdin=message.encode()).decode().strip()
        _git(repo, "update-ref", f"refs/heads/{branch}", commit)
    return list(carried)


def restore_checkpoints(runs: str | Path, repo: str | Path, branch: str = CARRY_BRANCH) -> int:
    """Writes the files of `branch` under `runs` and returns how many were written (those already there with the
    same bytes are kept).

    Raises:
        FileExistsError: a file is already under `runs` with other bytes (a run that went on on this machine), naming
            each; nothing is written then.
    """
    runs = Path(runs)
    archive = tarfile.open(fileobj=io.BytesIO(_git(Path(repo), "archive", "--format=tar", branch)))
    members = [member for member in archive.getmembers() if member.isfile()]
    contents = {member.name: archive.extractfile(member).read() for member in members}
    clashes = [name for name, data in contents.items()
               if (runs / name).exists() and (runs / name).read_bytes() != data]
    if clashes:
        raise FileExistsError(f"{len(clashes)} file(s) under {runs} differ from {branch}'s, so restoring would "
                              f"overwrite a run that went on here: {', '.join(clashes[:5])}"
                              f"{' ...' if len(clashes) > 5 else ''}; move that run away first")
    written = 0
    for name, data in contents.items():
        target = runs / name
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        partial.replace(target)
        written += 1
    return written
