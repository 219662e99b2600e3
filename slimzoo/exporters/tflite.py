"""TFLite export: the name is registered so `--format tflite` is understood, but the exporter is not built yet."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from slimzoo.errors import ExportError
from slimzoo.exporters.base import Exporter, ExportOptions, Runner, register_exporter


@register_exporter
class TFLiteExporter(Exporter):
    name = "tflite"
    suffix = ".tflite"
    built = False

    def export(self, module: nn.Module, example_input: torch.Tensor, path: Path, options: ExportOptions) -> None:
        raise ExportError("format 'tflite' is not built yet in this slimzoo version")

    def runner(self, path: Path, options: ExportOptions) -> Runner | None:
        return None
