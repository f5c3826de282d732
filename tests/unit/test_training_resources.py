"""A training job's `resources` (Ray Train workers): checked before anything runs, refused
without a Ray cluster, and the loop's split of a batch between data-parallel ranks."""

from __future__ import annotations

from typing import Any

import pytest

from openmaas.errors import InvalidRequest
from openmaas.training.loop import data_parallel_part
from openmaas.training.recipes import RECIPES
from openmaas.training.resources import check_resources

ADDRESS = "127.0.0.1:6379"


def checked(raw: Any, recipe: str = "textcnn", **options: Any) -> dict[str, Any] | None:
    options.setdefault("ray_address", ADDRESS)
    options.setdefault("hyperparameters", {})
    return check_resources(raw, RECIPES[recipe], **options)


def test_defaults_fill_in_and_none_asks_for_nothing() -> None:
    assert checked(None) is None
    assert checked({"num_workers": 2}) == {
        "num_workers": 2,
        "cpus_per_worker": 1.0,
        "gpus_per_worker": 0.0,
    }
    assert checked({"num_workers": 4, "cpus_per_worker": 2, "gpus_per_worker": 0.5}) == {
        "num_workers": 4,
        "cpus_per_worker": 2.0,
        "gpus_per_worker": 0.5,
    }


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ({"num_workers": 0}, "resources.num_workers"),
        ({"num_workers": True}, "resources.num_workers"),
        ({"num_workers": 1.5}, "resources.num_workers"),
        ({"cpus_per_worker": 0}, "resources.cpus_per_worker"),
        ({"cpus_per_worker": "4"}, "resources.cpus_per_worker"),
        ({"gpus_per_worker": -1}, "resources.gpus_per_worker"),
        ({"nodes": 2}, "resources.nodes"),
        ([2], "resources"),
    ],
)
def test_bad_values_name_their_field(raw: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        checked(raw)
    assert raised.value.param == param


def test_without_a_ray_cluster_resources_are_refused_naming_the_setting() -> None:
    with pytest.raises(InvalidRequest) as raised:
        checked({"num_workers": 2}, ray_address=None)
    assert raised.value.param == "resources"
    assert "OPENMAAS_RAY_ADDRESS" in raised.value.message


@pytest.mark.parametrize("recipe", ["textcnn", "bilstm", "gru", "transformer_encoder"])
def test_the_shared_loop_networks_train_data_parallel(recipe: str) -> None:
    assert checked({"num_workers": 2}, recipe) is not None


@pytest.mark.parametrize("recipe", ["frozen_encoder", "word2vec", "gpt", "cnn", "bilstm_tagger"])
def test_other_recipes_are_refused_naming_those_that_work(recipe: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        checked({"num_workers": 2}, recipe)
    assert raised.value.param == "resources"
    assert "textcnn, bilstm, gru, transformer_encoder" in raised.value.message


def test_a_search_takes_one_worker_per_trial() -> None:
    assert checked({"cpus_per_worker": 2}, "textcnn", search=True) is not None
    with pytest.raises(InvalidRequest) as raised:
        checked({"num_workers": 2}, search=True)
    assert raised.value.param == "resources.num_workers"
    with pytest.raises(InvalidRequest) as raised:
        checked({}, "frozen_encoder", search=True, base_model="minilm")
    assert raised.value.param == "resources"


def test_cross_validation_and_pretrained_embeddings_stay_local() -> None:
    with pytest.raises(InvalidRequest) as raised:
        checked({"num_workers": 2}, cross_validation=5)
    assert raised.value.param == "resources"
    with pytest.raises(InvalidRequest) as raised:
        checked({"num_workers": 2}, hyperparameters={"embeddings": "glove:1"})
    assert raised.value.param == "hyperparameters.embeddings"


@pytest.mark.parametrize(("n_items", "world_size"), [(50, 2), (17, 2), (16, 3), (7, 4), (1, 2)])
def test_ranks_split_a_batch_whole_and_never_empty(n_items: int, world_size: int) -> None:
    parts = [data_parallel_part(n_items, rank, world_size) for rank in range(world_size)]
    items = list(range(n_items))
    if n_items < world_size:  # every rank takes the whole batch
        assert all(items[part] == items for part in parts)
    else:
        assert [i for part in parts for i in items[part]] == items
        sizes = [len(items[part]) for part in parts]
        assert min(sizes) >= 1
        assert max(sizes) - min(sizes) <= 1
    assert data_parallel_part(n_items, 0, 1) == slice(0, n_items)
