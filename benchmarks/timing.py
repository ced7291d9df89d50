"""Closures the benchmarks time (shared by the CPU and GPU benchmarks)."""

import torch


def inference(model, batch: dict):
    """A closure running one no-grad forward of `batch` (labels dropped) in eval mode."""
    inputs = {key: value for key, value in batch.items() if key != "labels"}

    def run():
        model.eval()
        with torch.no_grad():
            model(**inputs)

    return run
