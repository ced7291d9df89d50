"""Non-LLM baselines of the paper: MF, LightGCN and SASRec, with their shared training loop."""

from .models import LightGCN, MatrixFactorization, SASRec, normalized_adjacency
from .trainer import BASELINES, DEFAULT_HYPERPARAMETERS, FitResult, InteractionTensors, evaluate, fit, predict, to_tensors, train_baseline

__all__ = ["BASELINES", "DEFAULT_HYPERPARAMETERS", "FitResult", "InteractionTensors", "LightGCN", "MatrixFactorization", "SASRec",
           "evaluate", "fit", "normalized_adjacency", "predict", "to_tensors", "train_baseline"]
