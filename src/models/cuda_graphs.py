"""One training batch's updates captured once in a CUDA graph and replayed (``model.cuda_graphs``).

A small net's step on a GPU is launch-bound: each of its few hundred kernels costs more to launch
from Python than to run. A CUDA graph records the kernels of one call (forward, backward, optimizer
step) and replays them with one launch. What a graph needs, and how this module provides it:
fixed shapes (the training batches are all full: ``drop_last``), inputs copied into the same
tensors every call (``CapturedStep``), no host synchronisation inside (the losses are checked for
NaN/inf after the replay), optimizers whose step counters live on the device (``capturable``),
and learning rates fixed for the graph's life (a changed one is a new signature: recaptured).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def make_capturable(optimizer: torch.optim.Optimizer) -> None:
    """Let ``optimizer`` step inside a CUDA graph: ``capturable`` on where the class has it (Adam,
    RMSprop, …; SGD needs none) and its step counters moved onto the parameters' device (a resumed
    state may hold them on the host)."""
    for group in optimizer.param_groups:
        if "capturable" in group:
            group["capturable"] = True
    for param, state in optimizer.state.items():
        step = state.get("step")
        if torch.is_tensor(step) and step.device != param.device:
            state["step"] = step.to(device=param.device, dtype=torch.float32)


def learning_rates(*optimizers: torch.optim.Optimizer) -> tuple[float, ...]:
    """Every param group's lr: a graph bakes them in, so a changed one needs a new capture."""
    return tuple(float(group["lr"]) for o in optimizers for group in o.param_groups)


class CapturedStep:
    """Calls ``fn(*inputs)`` eagerly ``warmup`` times (on a side stream, as CUDA graph capture
    requires: lazy initialisation such as optimizer states and cuBLAS workspaces happens there),
    then captures one call in a CUDA graph and replays it for every later call.

    Every call performs ``fn``'s work exactly once: the capturing call replays the graph it just
    recorded (capture itself runs nothing). ``inputs`` are tensors (or None) of the same shapes
    every call; the returned outputs are the graph's own tensors, overwritten by the next replay.
    With ``capture=False`` (a device without CUDA graphs) every call is an eager call of ``fn``.
    """

    def __init__(self, fn: Callable, warmup: int = 3, capture: bool = True):
        if warmup < 1:
            raise ValueError(f"CapturedStep needs warmup >= 1 eager calls, got {warmup}")
        self.fn = fn
        self.warmup = warmup
        self.capture = capture
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: tuple | None = None
        self.static_outputs = None

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, *inputs):
        self.calls += 1
        if not self.capture:
            return self.fn(*inputs)
        if self.graph is not None:
            for static, value in zip(self.static_inputs, inputs, strict=True):
                if static is not None:
                    static.copy_(value)
            self.graph.replay()
            return self.static_outputs
        if self.calls <= self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                outputs = self.fn(*inputs)
            torch.cuda.current_stream().wait_stream(side)
            return outputs
        self.static_inputs = tuple(None if x is None else x.clone() for x in inputs)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.static_outputs = self.fn(*self.static_inputs)
        self.graph = graph
        graph.replay()
        return self.static_outputs
