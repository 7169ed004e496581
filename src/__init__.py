"""ebgan-lab: Lightning + Hydra experiments with energy-based GANs."""

import os

# Tensors of 2 MB and more (the big MLPs' weight gradients: 41 MB each, allocated anew every step)
# are taken by PyTorch's CPU allocator in transparent huge pages: ~20x fewer page faults, 1.2-1.3x
# the speed of the largest MLP cell on a 2-core CPU (docs/speed.md). No effect on numerics;
# THP_MEM_ALLOC_ENABLE=0 in the environment turns it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
