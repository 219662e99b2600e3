"""Market regimes: the Chinese restaurant process, weights files, and their CLI (slimzoo market crp, --weights)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, cli

from slimzoo import api
from slimzoo.errors import RegistryError
from slimzoo.platforms import load_registry
from slimzoo.platforms.market import crp_tables, crp_weights, load_weights_file, normalise_weights

PHONES = ["iphone12", "galaxy-s21", "lg-velvet", "moto-g-power", "pixel5"]


def test_crp_tables_seat_everyone_and_are_seeded() -> None:
    tables = crp_tables(200, 1.5, random.Random(3))
    assert sum(tables) == 200 and all(t >= 1 for t in tables)
    assert crp_tables(200, 1.5, random.Random(3)) == tables


@pytest.mark.parametrize("alpha", [0.2, 1.0, 5.0])
def test_crp_number_of_tables_matches_its_expectation(alpha: float) -> None:
    # E[#tables after n customers] = sum_{i=1..n} alpha / (alpha + i - 1).
    n, draws = 50, 2000
    expected = sum(alpha / (alpha + i - 1) for i in range(1, n + 1))
    counts = [len(crp_tables(n, alpha, random.Random(seed))) for seed in range(draws)]
    assert np.mean(counts) == pytest.approx(expected, abs=4 * np.std(counts) / np.sqrt(draws) + 0.02)


def test_crp_first_customers_follow_the_seating_rule() -> None:
    # Customer 2 opens a new table with probability alpha / (1 + alpha).
    alpha, draws = 0.5, 20000
    new = sum(len(crp_tables(2, alpha, random.Random(seed))) == 2 for seed in range(draws)) / draws
    assert new == pytest.approx(alpha / (1 + alpha), abs=0.015)


def test_crp_weights_regimes() -> None:
    dominant = crp_weights(PHONES, 0.05, seed=0)
    fragmented = crp_weights(PHONES, 50.0, seed=0)
    for market in (dominant, fragmented):
        assert set(market.weights) == set(PHONES)
        assert sum(market.weights.values()) == pytest.approx(1.0)
    assert max(dominant.weights.values()) >= 0.9
    assert max(fragmented.weights.values()) < 0.5 and min(fragmented.weights.values()) > 0
    # While there are fewer tables than platforms, each table goes to a different platform.
    few = crp_weights(PHONES, 1.0, seed=4)
    if len(few.tables) <= len(PHONES):
        assert len(set(few.table_platforms)) == len(few.tables)
    assert crp_weights(PHONES, 1.0, seed=4) == few


def test_bad_crp_arguments() -> None:
    with pytest.raises(RegistryError, match="alpha must be"):
        crp_weights(PHONES, 0.0, 1)
    with pytest.raises(RegistryError, match="no platforms"):
        crp_weights([], 1.0, 1)


@pytest.mark.parametrize("weights, message", [
    ({"iphone12": 1.0, "iphone-12": 1.0}, "unknown platform 'iphone-12' (did you mean 'iphone12'?)"),
    ({"iphone12": 0.0, "pixel5": 0.0}, "weights must sum to a positive number"),
    ({"iphone12": -1.0, "pixel5": 2.0}, "must be >= 0"),
    ({"iphone12": "a lot"}, "must be a finite number"),
    ({}, "no platforms"),
])
def test_bad_weights_are_refused(weights: dict, message: str) -> None:
    with pytest.raises(RegistryError) as info:
        normalise_weights(weights, PHONES + ["host-cpu"])
    assert message in str(info.value)


def test_weights_file_flat_or_crp_output(tmp_path: Path) -> None:
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"iphone12": 3, "pixel5": 1}))
    assert load_weights_file(flat, PHONES) == {"iphone12": 0.75, "pixel5": 0.25}
    crp = tmp_path / "crp.json"
    crp.write_text(json.dumps(crp_weights(PHONES, 1.0, 2).to_json()))
    assert load_weights_file(crp, PHONES) == pytest.approx(crp_weights(PHONES, 1.0, 2).weights)
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(RegistryError, match="not valid JSON"):
        load_weights_file(bad, PHONES)
    with pytest.raises(RegistryError, match="no such weights file"):
        load_weights_file(tmp_path / "missing.json", PHONES)
    with pytest.raises(RegistryError, match="expected a JSON object"):
        (tmp_path / "list.json").write_text("[1, 2]")
        load_weights_file(tmp_path / "list.json", PHONES)


def test_resolve_market_defaults_to_market_shares_and_restricts() -> None:
    registry = load_registry()
    shares = api.resolve_market(registry)
    assert sum(shares.values()) == pytest.approx(1.0) and shares["host-cpu"] == 0.0
    assert shares["iphone12"] > shares["galaxy-s21"] > shares["pixel5"]
    two = api.resolve_market(registry, ["iphone12", "pixel5"], weights={"iphone12": 1, "pixel5": 3, "lg-velvet": 5})
    assert two == pytest.approx({"iphone12": 0.25, "pixel5": 0.75})
    with pytest.raises(RegistryError, match="no weight for pixel5"):
        api.resolve_market(registry, ["pixel5"], weights={"iphone12": 1})


def test_market_crp_command_json_round_trips_as_a_weights_file(tmp_path: Path) -> None:
    result = cli("market", "crp", "--platforms", "5", "--alpha", "0.5", "--seed", "3", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    top5 = sorted(load_registry().platforms(), key=lambda p: (-p.market.share, p.name))[:5]
    assert set(data["weights"]) == {p.name for p in top5} and "host-cpu" not in data["weights"]
    assert sum(data["weights"].values()) == pytest.approx(1.0)
    assert sum(t["size"] for t in data["tables"]) == data["customers"] == 100
    path = tmp_path / "w.json"
    path.write_text(result.stdout)
    assert load_weights_file(path, load_registry().names()) == pytest.approx(data["weights"])
    table = cli("market", "crp", "--platforms", "iphone12,pixel5", "--alpha", "2")
    assert table.exit_code == 0 and "iphone12" in table.stdout and "CRP market" in table.stdout


@pytest.mark.parametrize("args, fragments", [
    (["market", "crp", "--platforms", "99", "--alpha", "1"], ["--platforms 99: the registry has"]),
    (["market", "crp", "--platforms", "iphone-12", "--alpha", "1"], ["unknown platform 'iphone-12'"]),
    (["market", "crp", "--platforms", "3", "--alpha", "-1"], ["alpha must be a finite number > 0"]),
])
def test_market_crp_bad_input(args: list[str], fragments: list[str]) -> None:
    assert_one_line_error(cli(*args), 2, *fragments)


@pytest.mark.parametrize("content, fragments", [
    ({"iphone12": 0, "pixel5": 0}, ["weights must sum to a positive number"]),
    ({"iphone12": 1, "pixle5": 1}, ["unknown platform 'pixle5'", "did you mean 'pixel5'"]),
])
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_bad_weights_file_is_one_line_for_train_and_evaluate(tmp_path: Path, content: dict, fragments: list[str],
                                                             command: str) -> None:
    path = tmp_path / "w.json"
    path.write_text(json.dumps(content))
    extra = ["--out", str(tmp_path / "ck.safetensors")] if command == "train" else []
    assert_one_line_error(cli(command, *extra, "--weights", str(path)), 2, str(path), *fragments)
