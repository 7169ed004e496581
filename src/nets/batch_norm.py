from __future__ import annotations

from contextlib import contextmanager

from torch import nn


@contextmanager
def batch_statistics(module: nn.Module):
    """``module``'s batch norms on batch statistics, as in training; running stats left unchanged.

    A GAN discriminator sees real and fake batches separately during training, so its eval-mode
    output (running statistics of both mixed) is not what it was trained to produce; held-out
    diagnostics use this. Also a population's batch norms (src/population/stacked.py), which
    declare ``tracks_batch_statistics``.
    """
    norms = [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        or getattr(m, "tracks_batch_statistics", False)
    ]
    saved = [
        (
            m,
            m.training,
            m.momentum,
            None if m.num_batches_tracked is None else m.num_batches_tracked.clone(),
        )
        for m in norms
    ]
    for m in norms:
        m.train()
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    try:
        yield module
    finally:
        for m, training, momentum, tracked in saved:
            m.train(training)
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
