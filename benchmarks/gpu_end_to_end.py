"""The paper's preset path end to end on one GPU, at Vicuna-7B's shape, with nothing downloaded.

1. Saves a randomly initialised Llama of Vicuna-7B's shape (bfloat16, sharded safetensors)
   with a word-level tokenizer over the toy data set's texts, as a local "pretrained" folder.
2. Loads it as a USER-LLM base in a fresh process (`create_model_and_processor(...,
   base_model_kwargs={"device_map": "cuda"})`, bfloat16) and records the load time, the peak
   host memory (a second full copy of the LLM in RAM would show as > 2x its 12.6 GiB) and
   the dtypes of the frozen and trained weights.
3. Trains it on the toy data with `examples/train.py` as the Vicuna preset does (bfloat16 LLM,
   `bf16: true`, light checkpoints, both steps), then evaluates the saved light `model/` folder
   with `examples/evaluate.py` in a fresh process (AutoModel + trust_remote_code).

    python benchmarks/gpu_end_to_end.py --work-dir /tmp/e2e --output-dir OUT     # ~4 min on one H200
    python benchmarks/gpu_end_to_end.py --tiny --work-dir /tmp/e2e-tiny           # anywhere (CPU), a small shape

Prints each check and writes OUT/gpu_end_to_end.json.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from gpu_paper_scale import TINY, VICUNA_7B, default_dtype  # noqa: E402

from modeling_userllm.toy_model import build_toy_tokenizer  # noqa: E402
from modeling_userllm.training import prepare_toy_data  # noqa: E402

LOAD_CHECK = """
import json, resource, sys, time
import torch
from transformers import AutoTokenizer
from modeling_userllm import create_model_and_processor
path, device = sys.argv[1], sys.argv[2]
start = time.perf_counter()
model, processor = create_model_and_processor(
    AutoTokenizer.from_pretrained(path), "userllm", base_model_name_or_path=path, num_users=10, num_items=10,
    dtype=torch.bfloat16, base_model_kwargs={"device_map": device},
)
seconds = time.perf_counter() - start
model.set_training_step("encoders")
print("RESULT=" + json.dumps({
    "load_s": seconds,
    "peak_host_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
    "llm_parameters": sum(p.numel() for p in model.language_model.parameters()),
    "devices": sorted({str(p.device) for p in model.parameters()}),
    "frozen_llm_dtypes": sorted({str(p.dtype) for n, p in model.language_model.named_parameters() if "lora_" not in n}),
    "trained_dtypes": sorted({str(p.dtype) for p in model.parameters() if p.requires_grad}),
}))
"""


def run(command: list[str], timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def result_line(process: subprocess.CompletedProcess) -> dict:
    if process.returncode != 0:
        raise RuntimeError(process.stderr[-3000:])
    return json.loads(next(line for line in process.stdout.splitlines() if line.startswith("RESULT="))[len("RESULT="):])


def save_base_llm(folder: Path, shape: dict, corpus: list[str], device: str) -> dict:
    """A random Llama of `shape` in bfloat16 with a tokenizer over `corpus`, saved as a pretrained folder."""
    tokenizer = build_toy_tokenizer(corpus)
    start = time.perf_counter()
    with torch.device(device), default_dtype(torch.bfloat16):
        llm = LlamaForCausalLM(LlamaConfig(tie_word_embeddings=False, **shape))
    llm.save_pretrained(folder, max_shard_size="4GB")
    tokenizer.save_pretrained(folder)
    size = sum(path.stat().st_size for path in folder.glob("*.safetensors"))
    del llm
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"save_s": time.perf_counter() - start, "safetensors_gib": size / 2**30,
            "shards": len(list(folder.glob("*.safetensors"))), "tokenizer_size": len(tokenizer)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "userllm-gpu-e2e")
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps of each training step")
    parser.add_argument("--eval-rows", type=int, default=256)
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = TINY if args.tiny else VICUNA_7B
    args.work_dir.mkdir(parents=True, exist_ok=True)
    report = {"shape": "tiny" if args.tiny else "vicuna-7b", "device": device, "checks": {}}

    def check(name: str, fn):
        start = time.perf_counter()
        try:
            report["checks"][name] = {"ok": True, **fn(), "wall_s": time.perf_counter() - start}
        except Exception as error:  # report every stage, whatever fails
            report["checks"][name] = {"ok": False, "error": f"{type(error).__name__}: {str(error)[-2000:]}"}
        print(f"[{'ok' if report['checks'][name]['ok'] else 'FAILED'}] {name}: {json.dumps(report['checks'][name])}", flush=True)

    data_dir, features_dir = prepare_toy_data(args.work_dir / "toy", seed=0, num_users=120, num_items=100)
    from modeling_userllm.training import load_data_folder

    items = load_data_folder(data_dir).items
    corpus = list(items["title"]) + [text for text in items["description"] if text]
    base = args.work_dir / "base-llm"
    check("save a Vicuna-shaped base LLM", lambda: save_base_llm(base, shape, corpus, device))
    check("load it as a USER-LLM base", lambda: result_line(run([sys.executable, "-c", LOAD_CHECK, str(base), device], 900)))

    output_dir = args.work_dir / "run"
    train_command = [
        sys.executable, "examples/train.py", "--output_dir", str(output_dir), "--data_dir", str(data_dir),
        "--features_dir", str(features_dir), "--base_model_name_or_path", str(base), "--light_checkpoints", "true",
        "--dtype", "bfloat16", "--bf16", str(device == "cuda").lower(), "--use_cpu", str(device != "cuda").lower(),
        "--step1_max_steps", str(args.steps), "--step2_max_steps", str(args.steps),
        "--step1_per_device_train_batch_size", "8", "--step2_per_device_train_batch_size", "8",
        "--step1_learning_rate", "1e-4", "--step2_learning_rate", "1e-4", "--max_history_items", "5",
        "--save_steps", "1000", "--logging_steps", "5", "--max_eval_rows", str(args.eval_rows),
        "--per_device_eval_batch_size", "32", "--eval_splits", "valid", "--report_to", "none", "--disable_tqdm", "true",
    ]

    def train():
        process = run(train_command, 1200)
        if process.returncode != 0:
            raise RuntimeError(process.stderr[-3000:])
        metrics = json.loads((output_dir / "metrics.json").read_text())
        weights = output_dir / "model" / "model.safetensors"
        log_lines = [line for line in process.stderr.splitlines() if "'loss'" in line or "train_loss" in line]
        return {"valid": metrics["valid"], "light_weights_mib": weights.stat().st_size / 2**20, "log": log_lines[-4:]}

    check("train both steps as the Vicuna preset does (bf16, light checkpoints)", train)

    def evaluate():
        out = args.work_dir / "evaluate.json"
        process = run([sys.executable, "examples/evaluate.py", "--model", str(output_dir / "model"), "--data", str(data_dir),
                       "--features", str(features_dir), "--split", "valid", "--max-rows", str(args.eval_rows),
                       "--output", str(out)], 900)
        if process.returncode != 0:
            raise RuntimeError(process.stderr[-3000:])
        reloaded = json.loads(out.read_text())["valid"]
        trained = json.loads((output_dir / "metrics.json").read_text())["valid"]
        return {"reloaded_valid": reloaded, "auc_difference": abs(reloaded["auc"] - trained["auc"])}

    check("reload the light model/ folder in a fresh process and evaluate", evaluate)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    name = "gpu_end_to_end_tiny.json" if args.tiny else "gpu_end_to_end.json"
    with tempfile.NamedTemporaryFile("w", dir=args.output_dir, suffix=".tmp", delete=False) as handle:
        json.dump(report, handle, indent=2)
    os.replace(handle.name, args.output_dir / name)
    return report


if __name__ == "__main__":
    main()
