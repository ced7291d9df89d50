"""Shared fixtures: a tiny random USER-LLM, records, and the location of the real assets."""

import os
import random
from pathlib import Path

import pytest
import torch

from modeling_userllm import create_model_and_processor
from modeling_userllm.toy_model import build_toy_tokenizer, tiny_llama_config

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("USERLLM_SHARED", REPO_ROOT.parent / "shared"))
STORIES260K = SHARED_DIR / "models" / "stories260k"
# SmolLM2-135M-Instruct (Hub id HuggingFaceTB/SmolLM2-135M-Instruct), a real Llama-architecture LLM
# with a byte-level BPE tokenizer; optional, looked for in $USERLLM_ASSETS or ~/.cache/userllm-assets.
SMOLLM2 = Path(os.environ.get("USERLLM_ASSETS", Path.home() / ".cache" / "userllm-assets")) / "SmolLM2-135M-Instruct"

TITLES = ["Toy Story (1995)", "Heat (1995)", "Casino (1995)", "Sabrina (1995)", "GoldenEye (1995)", "Babe (1995)"]
DESCRIPTIONS = ["a cowboy doll is jealous of a space ranger", "a detective hunts a thief", "greed in las vegas",
                "a chauffeur's daughter falls in love", "a spy stops a satellite", "a pig herds sheep"]
NUM_USERS, NUM_ITEMS, FEATURE_SIZE = 5, len(TITLES), 384


# In CI the copy of ../shared is present, so a real-data test that skips there hides a broken
# path or asset: with CI set, such a skip fails the run. Only the optional assets may be absent.
OPTIONAL_ASSET_SKIP = "optional asset"
_unexpected_skips: list[tuple[str, str]] = []


def pytest_runtest_logreport(report):
    if report.skipped and os.environ.get("CI"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if OPTIONAL_ASSET_SKIP not in reason:
            _unexpected_skips.append((report.nodeid, reason))


def pytest_sessionfinish(session, exitstatus):
    if _unexpected_skips:
        lines = "\n".join(f"  {node}: {reason}" for node, reason in _unexpected_skips)
        print(f"\nCI is set and {len(_unexpected_skips)} tests skipped for a reason other than an optional asset:\n{lines}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def requires_shared(path: Path):
    """Skips a test when a real asset of ../shared is absent (e.g. on a user's machine)."""
    return pytest.mark.skipif(not path.exists(), reason=f"real asset not found at {path} (set USERLLM_SHARED)")


def requires_smollm2():
    """Skips a test when the optional SmolLM2-135M-Instruct folder is absent."""
    return pytest.mark.skipif(
        not (SMOLLM2 / "config.json").exists(),
        reason=f"optional asset SmolLM2-135M-Instruct not found at {SMOLLM2}: download HuggingFaceTB/SmolLM2-135M-Instruct "
               "there (e.g. `hf download HuggingFaceTB/SmolLM2-135M-Instruct --local-dir ...`) or set USERLLM_ASSETS",
    )


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models gain nothing from threads, and on a shared CPU their spinning costs seconds per forward."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_tokenizer():
    return build_toy_tokenizer(TITLES + DESCRIPTIONS)


def make_item(item_id: int, rng: random.Random, with_image: bool = True) -> dict:
    return {
        "item_id": item_id,
        "title": TITLES[item_id % len(TITLES)],
        "description": DESCRIPTIONS[item_id % len(DESCRIPTIONS)],
        "image_features": [rng.gauss(0, 1) for _ in range(FEATURE_SIZE)] if with_image else None,
    }


def make_records(num_records: int, history_length: int = 3, seed: int = 0) -> list[dict]:
    """Random records over the tiny catalogue; labels follow the item id's parity (learnable)."""
    rng = random.Random(seed)
    records = []
    for _ in range(num_records):
        item_id = rng.randrange(NUM_ITEMS)
        history = [make_item(rng.randrange(NUM_ITEMS), rng, with_image=rng.random() > 0.2) for _ in range(history_length)]
        records.append({**make_item(item_id, rng), "user_id": rng.randrange(NUM_USERS), "history": history, "label": item_id % 2})
    return records


def build_tiny_model(tokenizer, variant: str = "userllm", seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    model, processor = create_model_and_processor(
        tokenizer,
        variant,
        text_config=tiny_llama_config(len(tokenizer) + 4, hidden_size=32),
        num_users=NUM_USERS,
        num_items=NUM_ITEMS,
        **kwargs,
    )
    if model.config.use_collaborative:
        model.load_collaborative_embeddings(torch.randn(NUM_USERS, 256), torch.randn(NUM_ITEMS, 256))
    return model, processor


def perturb_lora(model, seed: int = 0) -> None:
    """Gives LoRA B non-zero values, so that a round trip that dropped LoRA would change scores."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)


FRESH_PROCESS_SCORER = """
import json, sys
sys.modules["modeling_userllm"] = None  # the package must not be importable: load through the saved code
import torch
from transformers import AutoModel, AutoProcessor
name, records_path, load_kwargs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
model = AutoModel.from_pretrained(name, trust_remote_code=True, **load_kwargs).eval()
processor = AutoProcessor.from_pretrained(name, trust_remote_code=True)
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
with torch.no_grad():
    scores = model(**processor(json.load(open(records_path)))).logits
print("SCORES=" + json.dumps(scores.tolist()))
"""


def train_script_signalling_itself(hook: str, condition: str, signal_name: str) -> str:
    """Python source that runs examples/train.py's main (arguments from the command line) with a callback sending
    the process `signal.<signal_name>` in `TrainerCallback.<hook>` where `condition` (over `args`, `state`) holds."""
    return f"""
import importlib.util, os, signal, sys
from transformers import TrainerCallback
spec = importlib.util.spec_from_file_location("train_script", {str(REPO_ROOT / "examples" / "train.py")!r})
train = importlib.util.module_from_spec(spec); spec.loader.exec_module(train)
class SignalItself(TrainerCallback):
    def {hook}(self, args, state, control, **kwargs):
        if {condition}:
            os.kill(os.getpid(), signal.{signal_name})
train.main(sys.argv[1:], callbacks=[SignalItself()])
"""


def score_in_fresh_process(name_or_path: str, records: list[dict], tmp_path: Path, env: dict | None = None,
                           load_kwargs: dict | None = None) -> list[float]:
    """Scores records in a new Python process started outside the repository, with the
    `modeling_userllm` package made unimportable, loading by `AutoModel`/`AutoProcessor` (with `load_kwargs`)."""
    import json
    import subprocess
    import sys

    records_path = tmp_path / "records.json"
    records_path.write_text(json.dumps(records))
    workdir = tmp_path / "fresh"
    workdir.mkdir(exist_ok=True)
    process_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SCORER, str(name_or_path), str(records_path), json.dumps(load_kwargs or {})],
        cwd=workdir, env=process_env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("SCORES="))
    return json.loads(line[len("SCORES="):])


DEMO_ARGV = [  # the embedded demo (configuration/toy.yaml) on a small toy set, a few steps per training step
    "--toy_num_users", "30", "--toy_num_items", "48", "--toy_hidden_size", "32",
    "--step1_max_steps", "2", "--step2_max_steps", "2",
    "--step1_per_device_train_batch_size", "8", "--step2_per_device_train_batch_size", "8",
    "--max_eval_rows", "40", "--eval_splits", "valid", "--report_to", "none", "--disable_tqdm", "true",
    "--save_strategy", "no",
]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`examples/train.py` run like the README's first command, in a small form: `root` stands for
    the repository root, the run is in `root/outputs/demo` (model, toy data, run_config.json) and
    `stdout` is what the script printed."""
    import contextlib
    import importlib.util
    import io
    from types import SimpleNamespace

    root = tmp_path_factory.mktemp("checkout")
    spec = importlib.util.spec_from_file_location("train_script", REPO_ROOT / "examples" / "train.py")
    train_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_script)
    threads = torch.get_num_threads()
    printed = io.StringIO()
    try:  # from `root`, with the preset's relative output_dir: run_config.json holds relative paths, as a user's does
        with contextlib.chdir(root), contextlib.redirect_stdout(printed):
            train_script.main(DEMO_ARGV)
    finally:
        torch.set_num_threads(threads)  # the toy preset sets one thread
    return SimpleNamespace(root=root, output_dir=root / "outputs" / "demo", stdout=printed.getvalue(),
                           train_script=train_script)
