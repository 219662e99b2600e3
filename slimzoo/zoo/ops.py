"""Slimmable ops: full-width torch layers that run at fewer channels by slicing their own parameters.

Each op keeps its parameters at full width under the ordinary names (so saved weights look like a plain net's)
and owns exactly one slicing function, used both by ``forward`` and by ``to_static``. The static twin is therefore
built from the very tensors ``forward`` would use, so the two cannot drift (the Once-for-All lesson).
The width is always an argument: no op stores "the current width", and ``forward`` has no side effects beyond
BatchNorm's usual running statistics in training mode.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def leading(tensor: Tensor, c0: int, c1: int | None = None) -> Tensor:
    """The first ``c0`` entries of ``tensor`` along dimension 0 (and the first ``c1`` along dimension 1): a view.

    A dimension kept whole is not sliced at all, so at full width the op gets the tensor itself: no autograd
    node, and no full-size zero-filled gradient that a no-op slice's backward would build (torch records
    ``t[:len(t)]`` as a slice like any other). Every slimmable op slices through this one function.
    """
    shape = tensor.shape
    if c1 is None or c1 == shape[1]:
        return tensor if c0 == shape[0] else tensor[:c0]
    return tensor[:, :c1] if c0 == shape[0] else tensor[:c0, :c1]


class SlimConv2d(nn.Conv2d):
    """A conv whose first ``c_out`` filters over the first ``c_in`` input channels form the narrower conv.

    Depthwise convs have one filter per channel, so they take ``c_out == c_in`` and slice filters only.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 depthwise: bool = False, bias: bool = False) -> None:
        if depthwise and in_channels != out_channels:
            raise ValueError("a depthwise conv has as many outputs as inputs")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                         groups=in_channels if depthwise else 1, bias=bias)
        self.depthwise = depthwise

    def sliced(self, c_in: int, c_out: int) -> tuple[Tensor, Tensor | None, int]:
        """(weight, bias, groups) of the conv at ``c_in -> c_out`` channels."""
        if self.depthwise:
            if c_in != c_out:
                raise ValueError(f"depthwise conv needs c_in == c_out, got {c_in} and {c_out}")
            weight, groups = leading(self.weight, c_out), c_out
        else:
            weight, groups = leading(self.weight, c_out, c_in), 1
        bias = None if self.bias is None else leading(self.bias, c_out)
        return weight, bias, groups

    def forward(self, x: Tensor, c_out: int | None = None) -> Tensor:  # type: ignore[override]
        c_in = x.shape[1]
        c_out = c_in if self.depthwise else (self.out_channels if c_out is None else c_out)
        weight, bias, groups = self.sliced(c_in, c_out)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)

    def to_static(self, c_in: int, c_out: int) -> nn.Conv2d:
        weight, bias, groups = self.sliced(c_in, c_out)
        conv = nn.Conv2d(c_in, c_out, self.kernel_size, stride=self.stride, padding=self.padding,
                         groups=groups, bias=bias is not None)
        with torch.no_grad():
            conv.weight.copy_(weight)
            if bias is not None:
                conv.bias.copy_(bias)
        return conv


class SlimBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first ``c`` channels of a full-width BN (shared affine; statistics recalibrated later)."""

    def sliced(self, c: int) -> tuple[Tensor | None, Tensor | None, Tensor, Tensor]:
        """(running_mean, running_var, weight, bias) for ``c`` channels."""
        mean = None if self.running_mean is None else leading(self.running_mean, c)
        var = None if self.running_var is None else leading(self.running_var, c)
        return mean, var, leading(self.weight, c), leading(self.bias, c)

    def forward(self, x: Tensor) -> Tensor:
        mean, var, weight, bias = self.sliced(x.shape[1])
        use_batch_stats = self.training or mean is None
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(x, mean, var, weight, bias, use_batch_stats, momentum, self.eps)

    def to_static(self, c: int) -> nn.BatchNorm2d:
        mean, var, weight, bias = self.sliced(c)
        bn = nn.BatchNorm2d(c, eps=self.eps, momentum=self.momentum)
        with torch.no_grad():
            bn.weight.copy_(weight)
            bn.bias.copy_(bias)
            if mean is not None and var is not None:
                bn.running_mean.copy_(mean)
                bn.running_var.copy_(var)
        return bn


class SlimLinear(nn.Linear):
    """A fully connected layer reading only the first ``c_in`` features (its outputs, the classes, stay fixed)."""

    def sliced(self, c_in: int) -> tuple[Tensor, Tensor | None]:
        return leading(self.weight, self.out_features, c_in), self.bias

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.sliced(x.shape[1])
        return F.linear(x, weight, bias)

    def to_static(self, c_in: int) -> nn.Linear:
        weight, bias = self.sliced(c_in)
        linear = nn.Linear(c_in, self.out_features, bias=bias is not None)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if bias is not None:
                linear.bias.copy_(bias)
        return linear


ACTIVATION_MODULES: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish}


def make_activation(act: str | bool | None) -> nn.Module | None:
    """The module of a spec activation (:data:`slimzoo.zoo.spec.ACTIVATIONS`); ``True`` is relu6, ``False`` and
    None are no activation."""
    act = {True: "relu6", False: None}.get(act, act) if isinstance(act, bool) else act
    return None if act is None else ACTIVATION_MODULES[act]()


class SlimConvBNAct(nn.Module):
    """Conv + BN (+ activation): the unit every MobileNet layer is made of. Its static twin is an
    ``nn.Sequential`` with the same child names (``conv``, ``bn``, ``act``), so state-dict keys line up."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 depthwise: bool = False, act: str | bool | None = True) -> None:
        super().__init__()
        self.conv = SlimConv2d(in_channels, out_channels, kernel_size, stride, depthwise=depthwise)
        self.bn = SlimBatchNorm2d(out_channels)
        self.act = make_activation(act)

    def forward(self, x: Tensor, c_out: int | None = None) -> Tensor:
        x = self.bn(self.conv(x, c_out))
        return self.act(x) if self.act is not None else x

    def to_static(self, c_in: int, c_out: int) -> nn.Sequential:
        parts: OrderedDict[str, nn.Module] = OrderedDict(conv=self.conv.to_static(c_in, c_out),
                                                         bn=self.bn.to_static(c_out))
        if self.act is not None:
            parts["act"] = type(self.act)()
        return nn.Sequential(parts)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018, as in MobileNetV3): ``x * hardsigmoid(fc2(relu(fc1(pool(x)))))``
    with 1x1 convs as the FCs. The static twin of :class:`SlimSqueezeExcite`."""

    def __init__(self, fc1: nn.Conv2d, fc2: nn.Conv2d) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.act, self.fc2, self.gate = fc1, nn.ReLU(), fc2, nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class SlimSqueezeExcite(nn.Module):
    """Squeeze-and-excitation over the first ``c`` channels with the first ``c_mid`` reduction channels: both
    widths are arguments (the spec's ``se`` layer: ``c_in`` = c, ``c_out`` = c_mid), the FCs are slimmable 1x1
    convs with bias, so :meth:`to_static` slices them with the function ``forward`` uses."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = SlimConv2d(channels, reduced, 1, bias=True)
        self.act = nn.ReLU()
        self.fc2 = SlimConv2d(reduced, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: Tensor, c_mid: int | None = None) -> Tensor:
        scale = self.act(self.fc1(self.pool(x), c_mid))
        return x * self.gate(self.fc2(scale, x.shape[1]))

    def to_static(self, c: int, c_mid: int) -> SqueezeExcite:
        return SqueezeExcite(self.fc1.to_static(c, c_mid), self.fc2.to_static(c_mid, c))
