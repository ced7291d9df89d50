"""Train and evaluate USER-LLM (or any LLM-based system of the paper) with the two-step schedule.

    # the embedded demo: toy data, tiny random Llama, both steps, evaluation, top-5 for a user
    python examples/train.py
    # a preset, with command-line overrides of any of its keys
    python examples/train.py --preset configuration/ml100k-smollm2.yaml --variant collm --step1_max_steps 100
    # several processes (same script): see configuration/accelerate/
    accelerate launch --config_file configuration/accelerate/multi_gpu.yaml examples/train.py --preset ...
    # continue an interrupted run from its last checkpoint
    python examples/train.py --preset ... --output_dir OUT --resume

Writes OUTPUT/metrics.json, OUTPUT/model/ (loads with AutoModel/AutoProcessor and
trust_remote_code=True), per-step checkpoints and TensorBoard logs. The same command is
`python -m modeling_userllm.training` (`modeling_userllm/training/pipeline.py`).
"""

from modeling_userllm.training.pipeline import main

if __name__ == "__main__":
    main()
