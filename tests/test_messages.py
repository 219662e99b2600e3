"""Messages a user sees for bad input say what is wrong in the user's terms (issue 12, item 12): the file and the
field, the tensor and both shapes, names accepted whatever their case; never an exception class or a solver's
internal index."""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

from slimzoo.cli import app
from slimzoo.errors import CheckpointError
from slimzoo.exporters.base import get_exporter
from slimzoo.zoo.checkpoint import load_checkpoint, loss_proxy_arrays

from conftest import DIGITS_CHECKPOINT


def test_wrong_shape_tensor_names_the_tensor_and_both_shapes() -> None:
    ck = load_checkpoint(DIGITS_CHECKPOINT)
    name = next(k for k, v in ck.state.items() if v.ndim == 4)  # a conv weight
    want = list(ck.state[name].shape)
    ck.state[name] = torch.zeros(want[0] + 1, *want[1:])
    with pytest.raises(CheckpointError) as info:
        ck.build_supernet()
    message = str(info.value)
    assert f"tensor '{name}' has shape {[want[0] + 1, *want[1:]]}, but the architecture needs {want}" in message
    assert str(DIGITS_CHECKPOINT) in message and "state_dict" not in message and "\n" not in message


def test_nan_loss_proxy_names_the_file_and_the_field() -> None:
    ck = load_checkpoint(DIGITS_CHECKPOINT)
    var = ck.spec.variables[2]
    ck.meta["loss_proxy"][var.name][1] = math.nan
    with pytest.raises(CheckpointError) as info:
        loss_proxy_arrays(ck)
    message = str(info.value)
    assert f"{DIGITS_CHECKPOINT}: field 'loss_proxy.{var.name}' holds nan for width {var.choices[1]}" in message
    assert "unary" not in message and "index" not in message


def test_format_and_layout_names_ignore_case() -> None:
    assert get_exporter("ONNX").name == "onnx" and get_exporter(" TFLite").name == "tflite"
    # ONNX and NCHW are accepted: the command gets as far as the budget, which is refused (exit 2) before any work
    r = CliRunner().invoke(app, ["export", "--platform", "pixel5", "--format", "ONNX", "--layout", "NCHW",
                                 "--budget", "-1", "--out", "/nonexistent/never"], env={"COLUMNS": "200"})
    text = " ".join(r.stderr.split())
    assert r.exit_code == 2 and "budget must be a finite number of ms > 0, got -1" in text, text


@pytest.mark.parametrize("mode", [["--platform", "iphone12"], ["--all-platforms"]])
@pytest.mark.parametrize("budget, code, fragment", [
    ("abc", 2, "--budget: expected a latency in ms, got 'abc'"),
    ("-1", 2, "got '-1'"),
    ("nan", 2, "got 'nan'"),
    ("1e999", 2, "got '1e999'"),
    ("0", 2, "budget must be a finite number of ms > 0, got 0"),
    ("0.00001", 1, "infeasible: the fastest configuration takes"),  # a budget no config meets
])
def test_every_search_budget_error_is_one_line_with_the_readmes_exit_code(mode: list[str], budget: str, code: int,
                                                                        fragment: str) -> None:
    """README: one line on stderr, 2 for bad input, 1 for a budget no configuration meets; never click's usage
    box (the budget is parsed by slimzoo, not click) and never a traceback."""
    r = CliRunner().invoke(app, ["search", *mode, "--budget", budget], env={"COLUMNS": "80"})
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr, r.exception)
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], r.stderr
    assert "Usage" not in r.stderr and "Traceback" not in r.stderr + r.stdout and r.stdout == ""
