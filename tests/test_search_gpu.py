"""GPUs through Ray on a CPU-only machine: a local Ray with two logical GPUs places trials that
ask for half a GPU two to a GPU; a trial that Ray gives a GPU where torch sees no CUDA fails
with a message that says so (the search goes on); a space that asks for more GPUs than any
node has, or for GPUs on a GPU-less cluster, ends before its first trial."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import ray
import torch
from ray import cloudpickle

from sla_nas.export import export_run
from sla_nas.results import (
    COMPILE,
    COMPILE_SECONDS,
    DEVICE,
    MESSAGE,
    PRECISION,
    STATUS,
    load_confirm,
    load_results,
)
from sla_nas.search import ConfirmOptions, SearchOptions, run_confirm, run_search
from sla_nas.search._ray import unplaceable
from sla_nas.search._trainable import run_trial

from conftest import RAY_TEST_TOKEN
from search_helpers import write_space

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the wrapper below runs in Ray
RECORDS = ""  # a folder, set by a test before the search; captured when the wrapper is pickled
TRIALS_AT_ONCE = 4

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gpu_ray():
    """A local Ray whose one node has 4 CPUs and 2 logical GPUs (there is no CUDA here)."""
    os.environ["RAY_AUTH_TOKEN"] = RAY_TEST_TOKEN
    ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


def search(tmp_path: Path, name: str, trainable=None, **sections):
    """A search of a tiny space on a small corpus beside the space file (its 5 % held-out
    end keeps evaluations short), named by a path relative to the space file."""
    (tmp_path / "corpus.txt").write_text(Path(argparse.__file__).read_text())
    space = write_space(tmp_path, name, task={"corpus": "corpus.txt"}, **sections)
    return run_search(space, SearchOptions(results=tmp_path / "results", quiet=True,
                                           confirm=False), trainable=trainable)


def recording_trial(config, setup):
    """Record the GPU ids Ray gave this trial, wait until all trials of the test hold theirs
    (so they provably ran at once), then train on the CPU: there is no CUDA here."""
    folder = Path(RECORDS)
    ids = [str(i) for i in ray.get_gpu_ids()]
    (folder / f"{config['number']}.json").write_text(json.dumps(
        {"gpu_ids": ids, "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}))
    deadline = time.monotonic() + 120
    while len(list(folder.glob("*.json"))) < TRIALS_AT_ONCE and time.monotonic() < deadline:
        time.sleep(0.05)
    (folder / f"{config['number']}.together").write_text(
        str(len(list(folder.glob("*.json")))))
    run_trial(config, dataclasses.replace(setup, device="cpu"))


@pytest.mark.usefixtures("gpu_ray")
def test_half_a_gpu_per_trial_places_two_trials_on_each_gpu(tmp_path):
    global RECORDS
    RECORDS = str(tmp_path / "records")
    Path(RECORDS).mkdir()
    outcome = search(tmp_path, "halves", trainable=recording_trial,
                     search={"sampler": "grid", "n_trials": TRIALS_AT_ONCE,
                             "concurrency": TRIALS_AT_ONCE, "gpus_per_trial": 0.5})
    records = [json.loads(p.read_text()) for p in Path(RECORDS).glob("*.json")]
    together = [int(p.read_text()) for p in Path(RECORDS).glob("*.together")]
    assert len(records) == TRIALS_AT_ONCE
    assert together == [TRIALS_AT_ONCE] * TRIALS_AT_ONCE  # all four held a GPU share at once
    assert all(len(r["gpu_ids"]) == 1 for r in records)
    assert sorted(Counter(r["gpu_ids"][0] for r in records).values()) == [2, 2]
    assert all(r["visible"] == r["gpu_ids"][0] for r in records)  # Ray narrowed CUDA to it
    frame = load_results(outcome.paths.root)
    trained = frame[frame[STATUS] == "ok"]
    assert len(trained) == TRIALS_AT_ONCE
    assert set(trained[DEVICE]) == {"cpu"} and set(trained[PRECISION]) == {"fp32"}
    assert set(trained[COMPILE]) == {False}

    # the confirmation asks Ray for the same half GPUs; --device cpu and --precision bf16
    # override the space, and what each run used reaches confirm.csv
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        confirmed = run_confirm(outcome.paths.root, ConfirmOptions(
            top=1, seeds=2, presets=("vanilla",), device="cpu", precision="bf16"))
        assert set(confirmed.table[STATUS]) == {"ok"}
        table = load_confirm(outcome.paths.root)
        assert set(table[DEVICE]) == {"cpu"} and set(table[PRECISION]) == {"bf16"}
        assert set(table[COMPILE]) == {False} and set(table[COMPILE_SECONDS]) == {0.0}
        # an export records how its weights were trained: the trial's, or its own retraining
        (exported,) = export_run(outcome.paths.root)
        record = json.loads((exported.folder / "metrics.json").read_text())["training"]
        assert record == {"device": "cpu", "precision": "fp32", "compile": False,
                          "compile_seconds": 0.0}
        (exported,) = export_run(outcome.paths.root, retrain_tokens=1000,
                                 out=tmp_path / "retrained")
        record = json.loads((exported.folder / "metrics.json").read_text())
        assert record["weights"]["source"] == "retrained"
        assert record["training"] == {"device": "cpu", "precision": "fp32", "compile": False,
                                      "compile_seconds": 0.0}  # auto without CUDA: the CPU
    finally:
        torch.set_num_threads(threads)


@pytest.mark.usefixtures("gpu_ray")
def test_a_trial_given_a_gpu_without_cuda_fails_and_says_why(tmp_path):
    outcome = search(tmp_path, "nocuda", seeds=["vanilla"],
                     search={"n_trials": 1, "concurrency": 1, "gpus_per_trial": 1})
    frame = load_results(outcome.paths.root)
    assert list(frame[STATUS]) == ["error"]
    message = frame[MESSAGE].iloc[0]
    node = ray.util.get_node_ip_address()
    assert f"Ray gave this trial GPU 0 on node {node}, but torch there sees no CUDA " \
           f"(torch {torch.__version__}" in message
    assert "install a CUDA build of torch on that node, or set search.gpus_per_trial: 0" \
        in message
    assert not outcome.interrupted


def missing_tokens_trial(config, setup):
    """A node without the tokens files: the space's paths do not exist here."""
    missing = str(Path(RECORDS) / "not-on-this-node")
    run_trial(config, dataclasses.replace(setup, task="tokens", task_options={
        "train": f"{missing}/train.bin", "val": f"{missing}/val.bin"}))


@pytest.mark.usefixtures("gpu_ray")
def test_task_files_missing_on_a_node_fail_the_trial_naming_node_and_path(tmp_path):
    global RECORDS
    RECORDS = str(tmp_path)
    outcome = search(tmp_path, "nofiles", trainable=missing_tokens_trial, seeds=["vanilla"],
                     search={"n_trials": 1, "concurrency": 1})
    frame = load_results(outcome.paths.root)
    assert list(frame[STATUS]) == ["error"]
    message = frame[MESSAGE].iloc[0]
    assert f"on node {ray.util.get_node_ip_address()}: " in message
    assert f"{tmp_path}/not-on-this-node/train.bin" in message
    assert "every node" in message


@pytest.mark.usefixtures("gpu_ray")
def test_more_gpus_than_any_node_has_ends_before_the_first_trial(tmp_path):
    with pytest.raises(ValueError) as err:
        search(tmp_path, "greedy", search={"gpus_per_trial": 4})
    text = str(err.value)
    assert "one trial asks for search.cpus_per_trial 1, search.gpus_per_trial 4" in text
    assert f"node {ray.util.get_node_ip_address()}: 4 CPUs, 2 GPUs" in text
    assert "lower search.gpus_per_trial to at most 2" in text
    assert not (tmp_path / "results" / "greedy").exists()  # a run that never started


def test_unplaceable_names_each_node_and_the_way_out():
    cpu_nodes = [{"Alive": True, "NodeManagerAddress": "10.0.0.1",
                  "Resources": {"CPU": 8.0}},
                 {"Alive": False, "NodeManagerAddress": "10.0.0.2",
                  "Resources": {"CPU": 8.0, "GPU": 4.0}}]  # a dead node holds nothing
    why = unplaceable(1, 0.5, cpu_nodes)
    assert why == ("one trial asks for search.cpus_per_trial 1, search.gpus_per_trial 0.5, "
                   "and no node of the Ray cluster can hold it (node 10.0.0.1: 8 CPUs, "
                   "0 GPUs); its trials would wait forever: set search.gpus_per_trial: 0 (and "
                   "train.device: auto or cpu) to train on CPUs, or connect to a cluster with "
                   "GPU nodes (ray start --num-gpus N on each, or --address)")
    assert unplaceable(16, 0, cpu_nodes).endswith("lower search.cpus_per_trial to at most 8")
    assert unplaceable(8, 0, cpu_nodes) is None
    two = cpu_nodes + [{"Alive": True, "NodeManagerAddress": "10.0.0.3",
                        "Resources": {"CPU": 2.0, "GPU": 1.0}}]
    assert unplaceable(2, 0.25, two) is None  # the GPU node has the CPUs too
    assert "node 10.0.0.3: 2 CPUs, 1 GPUs" in unplaceable(4, 0.25, two)


def test_a_gpu_space_on_a_gpu_less_cluster_ends_at_once(tmp_path):
    """Last in the module: it replaces the GPU Ray by one without GPUs."""
    ray.shutdown()
    os.environ["RAY_AUTH_TOKEN"] = RAY_TEST_TOKEN
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING)
    try:
        with pytest.raises(ValueError) as err:
            search(tmp_path, "gpuless", search={"gpus_per_trial": 0.5},
                   train={"device": "cuda"})
    finally:
        ray.shutdown()
    text = str(err.value)
    assert text.startswith(str(tmp_path / "gpuless.yaml"))
    assert "search.gpus_per_trial 0.5" in text and ": 2 CPUs, 0 GPUs" in text
    assert "set search.gpus_per_trial: 0 (and train.device: auto or cpu)" in text
    assert not (tmp_path / "results" / "gpuless").exists()


def test_trial_device_is_the_gpu_ray_gave(monkeypatch):
    """With CUDA present (simulated), ``auto`` and ``cuda`` are the GPU Ray assigned, found
    among the visible ones; without a GPU from Ray ``auto`` is the CPU."""
    from sla_nas.search._trainable import trial_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cases = [(["3"], "3", "auto", "cuda:0"), (["3"], "1,3", "cuda", "cuda:1"),
             (["3"], None, "auto", "cuda:3"), (["3"], "3", "cuda:0", "cuda:0"),
             ([], None, "auto", "cpu"), ([], None, "cpu", "cpu")]
    for ids, visible, requested, expected in cases:
        monkeypatch.setattr(ray, "get_gpu_ids", lambda ids=ids: ids)
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        assert trial_device(requested, "trial 0") == expected, (ids, visible, requested)
