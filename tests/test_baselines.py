"""Non-LLM baselines (MF, LightGCN, SASRec), their training loop and the MF export."""

import dataclasses

import datasets
import pytest
import torch

from modeling_userllm.baselines import (
    LightGCN,
    SASRec,
    evaluate,
    fit,
    normalized_adjacency,
    predict,
    to_tensors,
    train_baseline,
)
from modeling_userllm.baselines.trainer import HISTORY_PADDING_ID, pad_histories
from modeling_userllm.data import make_toy_movies
from modeling_userllm.features import FeatureStore
from modeling_userllm.features.collaborative import train_collaborative_embeddings

# Small models and large steps: the toy set is small, CoLLM's ML-1M settings would need
# hundreds of epochs here.
FAST_SETTINGS = {
    "mf": {"embedding_size": 32, "init_std": 0.1, "lr": 0.02, "weight_decay": 0.0},
    "lightgcn": {"embedding_size": 32, "lr": 0.02, "weight_decay": 0.0},
    "sasrec": {"hidden_size": 32, "lr": 0.01, "weight_decay": 0.0},
}
MAX_EPOCHS = {"mf": 15, "lightgcn": 15, "sasrec": 4}
# Stronger planted signals and longer logs than the default toy set, so that ID-only models
# learn within a few epochs.
TOY_GENERATOR = {"num_users": 300, "w_collaborative": 3.0, "w_history": 4.0, "interactions_per_user": (50, 70)}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small tensors run faster on one thread than on several contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def toy_data():
    datasets.disable_progress_bars()
    return make_toy_movies(seed=0, **TOY_GENERATOR)


@pytest.fixture(scope="module")
def small_toy_data(toy_data):
    """The first rows of each split: enough to compare scores, quick to train on."""
    interactions = datasets.DatasetDict(
        {name: split.select(range(min(400, len(split)))) for name, split in toy_data.interactions.items()}
    )
    return dataclasses.replace(toy_data, interactions=interactions)


def test_pad_histories_keeps_the_most_recent_items_left_padded():
    padded = pad_histories([[1, 2, 3, 4], [7], []], history_length=3)
    pad = HISTORY_PADDING_ID
    assert padded.tolist() == [[2, 3, 4], [pad, pad, 7], [pad, pad, pad]]


def test_normalized_adjacency_is_symmetric_with_inverse_sqrt_degree_weights():
    # users 0, 1; items 0, 1; edges u0-i0, u0-i1, u1-i1 (u0-i0 given twice: counts once)
    adjacency = normalized_adjacency(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 1, 1]), 2, 2).to_dense()
    assert torch.equal(adjacency, adjacency.T)
    degree = torch.tensor([2.0, 1.0, 1.0, 2.0])  # u0, u1, i0, i1
    assert adjacency[0, 3] == pytest.approx(1 / (degree[0] * degree[3]).sqrt().item())
    assert adjacency[1, 2] == 0 and adjacency.diagonal().eq(0).all()


def test_lightgcn_score_is_the_dot_product_of_layer_mean_embeddings():
    torch.manual_seed(0)
    model = LightGCN(2, 2, torch.tensor([0, 1]), torch.tensor([1, 0]), embedding_size=4, num_layers=1)
    e0 = torch.cat([model.user_embedding.weight, model.item_embedding.weight])
    final = (e0 + model.adjacency.to_dense() @ e0) / 2
    expected = final[0] @ final[2 + 1]
    assert model(torch.tensor([0]), torch.tensor([1]))[0].item() == pytest.approx(expected.item(), rel=1e-5)


def test_sasrec_scores_empty_and_padded_histories_without_nan():
    torch.manual_seed(0)
    model = SASRec(num_items=10, hidden_size=8, history_length=4).eval()
    pad = HISTORY_PADDING_ID
    history = torch.tensor([[pad, pad, pad, pad], [pad, pad, 3, 5], [1, 2, 3, 5]])
    scores = model(torch.zeros(3, dtype=torch.long), torch.tensor([4, 4, 4]), history)
    assert scores.shape == (3,) and torch.isfinite(scores).all()
    # Only real items matter: what sits in the padded slots' ids does not change the score.
    shorter = model(torch.zeros(1, dtype=torch.long), torch.tensor([4]), torch.tensor([[pad, pad, 3, 5]]))
    assert shorter.item() == pytest.approx(scores[1].item(), abs=1e-6)


@pytest.mark.parametrize("name", ["mf", "lightgcn", "sasrec"])
def test_baseline_learns_on_toy_data(name, toy_data):
    _, metrics = train_baseline(
        name, toy_data, seed=0, max_epochs=MAX_EPOCHS[name], patience=2, progress=False, **FAST_SETTINGS[name]
    )
    assert metrics["test"]["auc"] > 0.55, metrics["test"]
    assert set(metrics) >= {"valid", "test", "test_short", "test_long", "best_epoch"}


@pytest.mark.parametrize("name", ["mf", "lightgcn", "sasrec"])
def test_scores_are_reproducible_with_a_seed(name, small_toy_data):
    def test_scores(seed):
        model, _ = train_baseline(
            name, small_toy_data, seed=seed, max_epochs=2, patience=2, progress=False, **FAST_SETTINGS[name]
        )
        test = to_tensors(small_toy_data.interactions["test"], getattr(model, "history_length", 0))
        return predict(model, test)

    first = test_scores(0)
    assert (first == test_scores(0)).all()
    assert not (first == test_scores(1)).all()


def test_fit_restores_the_best_validation_epoch(small_toy_data):
    torch.manual_seed(0)
    data = small_toy_data
    model = LightGCN(data.num_users, data.num_items, torch.tensor([0]), torch.tensor([0]), embedding_size=8)
    train, valid = to_tensors(data.interactions["train"]), to_tensors(data.interactions["valid"])
    result = fit(
        model, train, valid, lr=0.05, weight_decay=0.0, batch_size=512, max_epochs=6, patience=6, progress=False
    )
    best = max(result.history, key=lambda epoch: epoch["valid_auc"])
    assert result.best_epoch == best["epoch"]
    assert evaluate(model, valid)["auc"] == pytest.approx(best["valid_auc"])


def test_a_one_class_split_is_scored_undefined_with_its_reason_and_a_one_class_valid_is_refused(small_toy_data):
    def with_split(name, split):
        return dataclasses.replace(small_toy_data, interactions=datasets.DatasetDict(
            {**small_toy_data.interactions, name: split.filter(lambda row: row["label"] == 1)}))

    data = with_split("test", small_toy_data.interactions["test"])
    _, metrics = train_baseline("mf", data, max_epochs=1, patience=1, progress=False, **FAST_SETTINGS["mf"])
    assert metrics["test"]["auc"] is None and metrics["test"]["uauc"] is None
    assert "0 negatives" in metrics["test"]["undefined"]["auc"] and "none of the" in metrics["test"]["undefined"]["uauc"]
    assert 0 <= metrics["valid"]["auc"] <= 1 and "undefined" not in metrics["valid"]
    with pytest.raises(ValueError, match="valid split: AUC needs both classes.*early stopping needs a valid AUC"):
        train_baseline("mf", with_split("valid", small_toy_data.interactions["valid"]), max_epochs=1, progress=False)


def test_unknown_hyperparameter_raises(small_toy_data):
    with pytest.raises(ValueError, match="num_layers"):
        train_baseline("mf", small_toy_data, num_layers=3)


def test_mf_export_round_trips(small_toy_data, tmp_path):
    data = small_toy_data
    users, items, metrics = train_collaborative_embeddings(
        data, dim=16, lr=0.02, seed=0, max_epochs=2, patience=2, progress=False
    )
    assert users.shape == (data.num_users, 16) and items.shape == (data.num_items, 16)
    assert users.dtype == items.dtype == torch.float32
    assert "test" in metrics

    FeatureStore(user_embeddings=users, item_embeddings=items).save(tmp_path / "features")
    assert sorted(p.name for p in (tmp_path / "features").iterdir()) == ["collaborative.safetensors"]  # no temp file left
    loaded = FeatureStore.load(tmp_path / "features")
    assert torch.equal(loaded.user_embeddings, users) and torch.equal(loaded.item_embeddings, items)


def test_collaborative_tables_of_mismatched_widths_are_refused():
    with pytest.raises(ValueError, match=r"num_users.*\(3, 8\) and \(4, 16\)"):
        FeatureStore(user_embeddings=torch.zeros(3, 8), item_embeddings=torch.zeros(4, 16))
