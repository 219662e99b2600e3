"""Training strategies, resumable and seeded training, data sets on disk, evaluation, and two-process training.

Everything runs a tiny supernet (width 0.25, two choices per variable, 16x16 inputs) on a slice of the digits
for a handful of steps, one thread: these tests check behaviour, not accuracy (benchmarks/bench_strategies.py
compares the strategies).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, cli

from slimzoo import api
from slimzoo.errors import BudgetError, CheckpointError, ConfigError, DatasetError
from slimzoo.platforms import load_registry
from slimzoo.search.tree import compile_tree, decode, min_sum
from slimzoo.zoo.checkpoint import load_checkpoint
from slimzoo.zoo.data import load_cifar100_dataset, load_dataset, load_digits_dataset, load_imagefolder_dataset
from slimzoo.zoo.distributed import state_digest
from slimzoo.zoo.registry import build_spec, create_supernet
from slimzoo.zoo.strategies import STRATEGIES, GibbsSampler, Target, check_targets, make_sampler, temperature
from slimzoo.zoo.train import LossProxy, TrainSettings, read_train_state, train_supernet

TINY = {"width_mult": 0.25, "multipliers": (0.5, 1.0)}
ARGS = ["--width-mult", "0.25", "--multipliers", "0.5,1", "--input-size", "16"]


@pytest.fixture(autouse=True)
def one_thread():
    """The machines these run on are shared: one intra-op thread (oversubscribed threads spin and crawl)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    data = load_digits_dataset(16)
    return dataclasses.replace(data, train_x=data.train_x[:96], train_y=data.train_y[:96], val_x=data.val_x[:64],
                               val_y=data.val_y[:64])


def tiny_spec():
    return build_spec("mobilenetv2", input_size=16, in_channels=1, num_classes=10, **TINY)


def targets_for(spec, names=("iphone12", "galaxy-s21"), weights=(0.7, 0.3)):
    registry = load_registry()
    zero = {v.name: np.zeros(len(v.choices)) for v in spec.variables}
    out = []
    for name, w in zip(names, weights):
        table = registry.latency_table(registry.get(name), spec)
        out.append(Target(name, w, api.build_problem(spec, table, zero, registry.budget_ms(name, spec, table))))
    return out


# -- strategies ---------------------------------------------------------------------------------------------
def test_temperature_schedule() -> None:
    assert temperature(0, 100, 25) == temperature(24, 100, 25) == 1.0
    assert temperature(99, 100, 25) == pytest.approx(5e-4)
    mid = temperature(62, 100, 25)
    assert np.log(mid) == pytest.approx(np.log(5e-4) * (62 - 25) / 74)  # log-linear


def test_uniform_sampler_is_the_sandwich_rule() -> None:
    spec = tiny_spec()
    sampler = make_sampler("uniform", spec, [], 3, 10, 0)
    drawn = sampler.draw(0, {})
    assert drawn[0] == (spec.smallest(), False)  # trained, but not fed to the proxy
    assert len(drawn) == 4 and all(feeds for _, feeds in drawn[1:])


@pytest.mark.parametrize("strategy", ["aows", "platforms", "platforms-marginal"])
def test_adaptive_samplers_concentrate_on_each_platforms_lagrangian_config(strategy: str) -> None:
    spec = tiny_spec()
    targets = targets_for(spec)[:1] if strategy == "aows" else targets_for(spec)
    sampler = make_sampler(strategy, spec, targets, 2, 100, 0, lambda_every=10)
    assert isinstance(sampler, GibbsSampler)
    # A realistic proxy: narrower is worse.
    proxy = {v.name: np.linspace(0.5, 0.0, len(v.choices)) for v in spec.variables}
    drawn = sampler.draw(0, proxy)
    assert len(drawn) == 3 and all(feeds for _, feeds in drawn)  # n_random + 1, all feed the proxy
    for step in range(1, 100):
        drawn = sampler.draw(step, proxy)
    assert sampler.temperature == pytest.approx(5e-4)
    # At the final temperature every sample is (nearly surely) a min-sum optimum of one platform's
    # loss + lambda * latency. At the multiplier the Lagrangian search returns, two configs (one each side of the
    # budget) tie by construction, so compare values, not one argmin.
    problems = [dataclasses.replace(t.problem, unary=[proxy[n] for n in spec.variable_names])
                for t in sampler.targets]
    best = []
    for problem, lam in zip(problems, sampler.lambdas):
        tree = compile_tree(problem)
        x = decode(tree, min_sum(tree, [1.0], [lam]))
        best.append(problem.loss(x) + lam * problem.latency(x))
    for config, _ in drawn:
        x = list(spec.index_of(config).values())
        assert any(abs(p.loss(x) + lam * p.latency(x) - b) <= 1e-9 * max(1.0, abs(b))
                   for p, lam, b in zip(problems, sampler.lambdas, best)), config
    assert set(sampler.status()["lambda"]) == {t.name for t in sampler.targets}


def test_sampler_rejections() -> None:
    spec = tiny_spec()
    with pytest.raises(ConfigError, match="unknown strategy 'unifrom'.*did you mean 'uniform'"):
        make_sampler("unifrom", spec, [], 2, 10, 0)
    with pytest.raises(ConfigError, match="'aows' trains for one platform"):
        make_sampler("aows", spec, targets_for(spec), 2, 10, 0)
    tight = targets_for(spec, ("iphone12",), (1.0,))[0]
    with pytest.raises(BudgetError, match="iphone12: budget 0.001 ms is infeasible"):
        check_targets([Target("iphone12", 1.0, dataclasses.replace(tight.problem, budget=0.001))])


# -- training ------------------------------------------------------------------------------------------------
def settings(**kw) -> TrainSettings:
    base = dict(epochs=2, batch_size=32, n_random=1, seed=3, val_each_epoch=False, lambda_every=2)
    return TrainSettings(**{**base, **kw})


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_every_strategy_trains_and_updates_the_proxy(strategy: str, digits) -> None:
    spec = tiny_spec()
    targets = targets_for(spec)[:1] if strategy == "aows" else targets_for(spec)
    net = create_supernet(spec)
    summary = train_supernet(net, digits, settings(strategy=strategy, steps=3), targets=targets)
    assert summary["steps"] == 3 and summary["strategy"] == strategy
    proxy = summary["loss_proxy"]
    assert set(proxy) == set(spec.variable_names)
    assert any(value != 0.0 for values in proxy.values() for value in values)
    # the reported accuracy is the trained network's on the validation split, scored again here
    from slimzoo.zoo.evaluate import evaluate_config

    assert summary["val_accuracy"]["largest"] == pytest.approx(
        evaluate_config(net, digits, spec.largest()).accuracy, abs=1e-4)
    if strategy != "uniform":
        assert summary["sampler"]["temperature"] == pytest.approx(5e-4)


def test_proxy_never_counts_the_sandwich_smallest(digits) -> None:
    spec = tiny_spec()
    seen = []
    original = LossProxy.update

    def spy(self, config, relative):
        seen.append(config)
        return original(self, config, relative)

    LossProxy.update = spy  # type: ignore[method-assign]
    try:
        train_supernet(create_supernet(spec), digits, settings(steps=2, n_random=2))
    finally:
        LossProxy.update = original  # type: ignore[method-assign]
    assert len(seen) == 4  # 2 steps x 2 random configs, never the smallest (unless drawn at random)


def test_same_seed_same_weights(digits) -> None:
    spec = tiny_spec()
    torch.manual_seed(0)
    a = create_supernet(spec)
    torch.manual_seed(0)
    b = create_supernet(spec)
    targets = targets_for(spec)
    sa = train_supernet(a, digits, settings(strategy="platforms", steps=3), targets=targets)
    sb = train_supernet(b, digits, settings(strategy="platforms", steps=3), targets=targets)
    assert state_digest(a) == state_digest(b)
    assert sa["loss_proxy"] == sb["loss_proxy"]


class Killed(Exception):
    pass


def test_killed_run_resumes_to_the_same_weights(tmp_path: Path, digits) -> None:
    """A run killed in its second epoch resumes from the end of the first and ends exactly where an
    uninterrupted run ends (weights, proxy, sampler state), with its state file always loadable."""
    spec = tiny_spec()
    targets = targets_for(spec)
    s = settings(strategy="platforms", epochs=2)  # 3 steps per epoch, 6 steps
    torch.manual_seed(0)
    whole = create_supernet(spec)
    full = train_supernet(whole, digits, s, targets=targets)

    state = tmp_path / "ck.safetensors.train-state"

    def kill_in_epoch_two(done: int, total: int, status: str) -> None:
        if done == 4:
            raise Killed

    torch.manual_seed(0)
    with pytest.raises(Killed):
        train_supernet(create_supernet(spec), digits, s, kill_in_epoch_two, targets=targets, state_path=state)
    assert sorted(p.name for p in tmp_path.iterdir()) == [state.name]  # no temp file left behind
    _, header = read_train_state(state)
    assert header["epoch"] == 1 and header["step"] == 3

    torch.manual_seed(123)  # the resumed run must not depend on the fresh net's initialisation
    resumed = create_supernet(spec)
    log = tmp_path / "log.jsonl"
    again = train_supernet(resumed, digits, s, targets=targets, state_path=state, resume=True, log_path=log)
    assert state_digest(resumed) == state_digest(whole)
    assert again["loss_proxy"] == full["loss_proxy"] and again["steps"] == full["steps"] == 6
    assert again["sampler"] == full["sampler"]
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert events[0] == "resume" and events.count("epoch") == 1 and events[-1] == "end"

    with pytest.raises(CheckpointError, match="different settings: the run used lr=0.05 \\(now 0.1\\)"):
        train_supernet(create_supernet(spec), digits, dataclasses.replace(s, lr=0.1), targets=targets,
                       state_path=state, resume=True)
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable training state"):
        train_supernet(create_supernet(spec), digits, s, targets=targets, state_path=state, resume=True)


def test_train_writes_configs_and_evaluate_reports_the_weighted_objective(tmp_path: Path) -> None:
    out = tmp_path / "ck.safetensors"
    log = tmp_path / "train.jsonl"
    summary = api.train(out, settings=TrainSettings(epochs=1, steps=2, batch_size=32, n_random=1,
                                                    strategy="platforms"),
                        spec_params=TINY, input_size=16, platforms=["iphone12", "pixel5"],
                        weights={"iphone12": 3, "pixel5": 1}, log_path=log)
    assert not api.train_state_path(out).exists()  # removed once the checkpoint is written
    ck = load_checkpoint(out)
    configs = ck.meta["platform_configs"]
    assert set(configs) == {"iphone12", "pixel5"}
    assert configs["iphone12"]["market_weight"] == pytest.approx(0.75)
    for c in configs.values():
        assert c["predicted_latency_ms"] <= c["budget_ms"] * (1 + 1e-9)
        ck.spec.validate(c["config"])
    assert ck.meta["training"]["strategy"] == "platforms"
    assert set(ck.loss_proxy) == set(ck.spec.variable_names)
    assert summary["platform_configs"] == configs
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["event"] for r in records] == ["start", "step", "epoch", "end"]
    assert records[1]["img_per_s"] > 0 and "temperature" in records[1]

    result = api.evaluate(out, weights={"iphone12": 1, "pixel5": 1, "galaxy-s21": 2})
    assert [r.platform for r in result.results] == ["iphone12", "pixel5", "galaxy-s21"]
    assert result.weighted_accuracy == pytest.approx(sum(r.weight * r.accuracy for r in result.results))
    assert {r.platform: r.weight for r in result.results} == pytest.approx(
        {"iphone12": 0.25, "pixel5": 0.25, "galaxy-s21": 0.5})
    same = {r.platform: r.config.to_json() for r in result.results if r.platform in configs}
    assert same == {name: c["config"] for name, c in configs.items()}  # the search is deterministic

    data = json.loads(json.dumps(result.to_json()))
    assert data["weighted_accuracy"] == pytest.approx(sum(p["market_weight"] * p["accuracy"]
                                                          for p in data["platforms"]))
    assert data["strategy"] == "platforms" and 0 <= data["reference_accuracy"]["largest"] <= 1
    table = cli("evaluate", "--checkpoint", str(out), "--platforms", "pixel5")
    assert table.exit_code == 0, table.stderr
    assert "weighted accuracy" in table.stdout and "pixel5" in table.stdout

    # --init continues from the checkpoint's weights and loss proxy (a strategy phase after a shared warm start).
    again = tmp_path / "again.safetensors"
    api.train(again, settings=TrainSettings(epochs=1, steps=1, batch_size=32, n_random=1, lr=0.0,
                                            weight_decay=0.0, strategy="aows"),
              spec_params=TINY, input_size=16, platform="pixel5", init=out)
    follow = load_checkpoint(again)
    weights = [k for k in ck.state if k.endswith("conv.weight")]
    assert all(torch.equal(follow.state[k], ck.state[k]) for k in weights)  # lr 0: the weights it started from
    assert sum(follow.meta["loss_proxy_counts"]["head"]) == sum(ck.meta["loss_proxy_counts"]["head"]) + 2
    with pytest.raises(ConfigError, match="its architecture .* is not this run's"):
        api.train(tmp_path / "x.safetensors", settings=TrainSettings(steps=1, batch_size=32), init=out,
                  spec_params={"width_mult": 0.5, "multipliers": (0.5, 1.0)}, input_size=16)


def test_cli_train_resume_and_json(tmp_path: Path) -> None:
    out = tmp_path / "ck.safetensors"
    first = cli("train", "--out", str(out), "--steps", "2", "--batch-size", "48", *ARGS, "--strategy", "aows",
                "--platform", "pixel5", "--json", "--seed", "1")
    assert first.exit_code == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["strategy"] == "aows" and summary["steps"] == 2
    assert summary["sampler"]["lambda"].keys() == {"pixel5"}
    assert_one_line_error(cli("train", "--out", str(out), "--steps", "2", *ARGS, "--resume"), 2,
                          "nothing to resume", "train-state")


@pytest.mark.parametrize("args, fragments", [
    (["--strategy", "sandwich"], ["unknown strategy 'sandwich'", "valid: uniform, aows, platforms"]),
    (["--strategy", "aows"], ["strategy 'aows' trains for one platform: give --platform"]),
    (["--strategy", "aows", "--platform", "iphone-12"], ["unknown platform 'iphone-12'"]),
    (["--platform", "pixel5"], ["--platform is for the 'aows' strategy"]),
    (["--dataset", "cifar100"], ["cifar100 needs --data-dir", "never downloads"]),
    (["--dataset", "cifar100", "--data-dir", "/nonexistent/cifar"], ["/nonexistent/cifar: no such dataset"]),
    (["--dataset", "imagenet"], ["unknown dataset 'imagenet'"]),
    (["--platforms", "host-cpu"], ["market shares of host-cpu are all 0"]),
    (["--multipliers", "0.5,x"], ["--multipliers: expected comma-separated numbers"]),
])
def test_bad_train_input_is_one_clear_line(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    assert_one_line_error(cli("train", "--out", str(tmp_path / "ck.safetensors"), *args), 2, *fragments)
    assert not (tmp_path / "ck.safetensors").exists()


# -- data on disk --------------------------------------------------------------------------------------------
def write_tiny_cifar100(root: Path, n_train: int = 40, n_test: int = 20) -> Path:
    """A CIFAR-100 python-format directory (pickled dicts with bytes keys, as the real one) of random images."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", n_train), ("test", n_test)):
        data = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": list(rng.integers(0, 100, n)
                                                                                         .tolist()),
                b"coarse_labels": [0] * n, b"filenames": [b"x.png"] * n, b"batch_label": name.encode()}
        (folder / name).write_bytes(pickle.dumps(data, protocol=2))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"class{i}".encode() for i in range(100)],
                                                b"coarse_label_names": [b"all"]}, protocol=2))
    return folder


def test_cifar100_from_its_python_format(tmp_path: Path) -> None:
    write_tiny_cifar100(tmp_path)
    data = load_dataset("cifar100", data_dir=tmp_path)  # the folder holding cifar-100-python/ also works
    assert data.train_x.shape == (40, 3, 32, 32) and data.val_x.shape == (20, 3, 32, 32)
    assert len(data.class_names) == 100 and data.class_names[7] == "class7"
    assert data.flip and data.crop_pad == 4 and len(data.mean) == 3
    assert data.train_x.mean().abs() < 1e-4  # normalised with the training split's statistics
    raw = pickle.loads((tmp_path / "cifar-100-python" / "train").read_bytes())
    first = torch.from_numpy(raw[b"data"][0].reshape(3, 32, 32).astype(np.float32) / 255)
    restored = data.train_x[0] * torch.tensor(data.std)[:, None, None] + torch.tensor(data.mean)[:, None, None]
    assert torch.allclose(restored, first, atol=1e-5)  # channel-major rows, as the format defines
    x, _ = next(data.train_batches(8, torch.Generator().manual_seed(0)))
    assert x.shape == (8, 3, 32, 32)


def test_malformed_cifar100_is_one_dataset_error(tmp_path: Path) -> None:
    folder = write_tiny_cifar100(tmp_path)
    (folder / "test").unlink()
    with pytest.raises(DatasetError, match="missing test"):
        load_cifar100_dataset(folder)
    (folder / "test").write_bytes(b"not a pickle at all")
    with pytest.raises(DatasetError, match="not a CIFAR-100 python-format file"):
        load_cifar100_dataset(folder)
    (folder / "test").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"fine_labels": [0, 1]}))
    with pytest.raises(DatasetError, match="uint8 rows of 3072 pixels"):
        load_cifar100_dataset(folder)
    # A hostile pickle is refused, not run.
    (folder / "test").write_bytes(pickle.dumps({b"data": os.getcwd}, protocol=2))
    with pytest.raises(DatasetError, match="refusing to load global"):
        load_cifar100_dataset(folder)


def test_train_on_cifar100_dir_end_to_end(tmp_path: Path) -> None:
    write_tiny_cifar100(tmp_path / "data")
    out = tmp_path / "ck.safetensors"
    summary = api.train(out, "cifar100", settings=TrainSettings(epochs=1, batch_size=16, n_random=1),
                        data_dir=tmp_path / "data", spec_params=TINY, input_size=16)
    assert summary["steps"] == 2
    ck = load_checkpoint(out)
    assert ck.spec.params["num_classes"] == 100 and ck.spec.params["in_channels"] == 3
    assert ck.meta["dataset"]["data_dir"].endswith("cifar-100-python")
    result = api.evaluate(out, platforms=["pixel5"])  # finds the data from the checkpoint
    assert result.dataset == "cifar100" and result.val_size == 20


def write_image_folder(root: Path, classes=("cat", "dog"), n: int = 5, size: int = 20) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_imagefolder_trees(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "flat")
    data = load_imagefolder_dataset(tmp_path / "flat", input_size=16)
    assert data.class_names == ["cat", "dog"] and data.train_x.shape[1:] == (3, 16, 16)
    assert len(data.train_x) == 8 and len(data.val_x) == 2 and set(data.val_y.tolist()) == {0, 1}
    write_image_folder(tmp_path / "split" / "train")
    write_image_folder(tmp_path / "split" / "val", n=2)
    data = load_imagefolder_dataset(tmp_path / "split", input_size=16)
    assert len(data.train_x) == 10 and len(data.val_x) == 4
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class folders with images"):
        load_imagefolder_dataset(tmp_path / "empty")
    (tmp_path / "flat" / "cat" / "broken.png").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="broken.png: cannot read image"):
        load_imagefolder_dataset(tmp_path / "flat")


# -- two processes ----------------------------------------------------------------------------------------------
def test_torchrun_two_processes_agree_on_the_weights(tmp_path: Path) -> None:
    out = tmp_path / "ck.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "slimzoo", "train", "--out", str(out), "--strategy", "platforms", "--steps", "3",
                           "--batch-size", "32", *ARGS, "--json"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])  # rank 0 prints; rank 1 prints nothing
    dist = summary["distributed"]
    assert dist["world_size"] == 2 and dist["backend"] == "gloo"
    assert dist["replicas_agree"] and len(set(dist["replica_state_sha256"])) == 1
    assert state_digest(load_checkpoint(out).build_supernet()) == dist["replica_state_sha256"][0]
    print(f"two-process training took {time.perf_counter() - started:.1f} s")
