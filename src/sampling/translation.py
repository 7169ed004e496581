"""Images -> images for the translators (pix2pix, CycleGAN): chunked translation in eval mode and
the grids the callbacks and src/translate.py write. Images are float in [-1, 1]."""

from __future__ import annotations

import torch

from src.data.images import with_channels


def is_translator(model) -> bool:
    """Whether ``model`` maps images to images (``translate``) rather than latents to images."""
    return getattr(model, "is_translator", False)


class IdentityTranslator:
    """The baseline that needs no training: every image is its own translation (CycleGAN's
    identity map; a grey image given to a colour domain is repeated over the channels)."""

    is_translator = True
    training = False
    device = torch.device("cpu")

    def __init__(self, channels_b: int, channels_a: int):
        self.channels_a, self.channels_b = channels_a, channels_b

    @staticmethod
    def _to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
        if images.shape[1] == channels:
            return images
        return images.mean(1, keepdim=True).expand(-1, channels, -1, -1)

    def translate(self, a: torch.Tensor) -> torch.Tensor:
        return self._to_channels(a, self.channels_b)

    def translate_back(self, b: torch.Tensor) -> torch.Tensor:
        return self._to_channels(b, self.channels_a)

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self


@torch.no_grad()
def translate_images(
    model, images: torch.Tensor, direction: str = "a2b", batch_size: int = 500
) -> torch.Tensor:
    """``model.translate`` (A -> B) or ``model.translate_back`` (B -> A, CycleGAN) of ``images`` in
    eval mode (mode restored after), in chunks; the result on the CPU."""
    if direction not in ("a2b", "b2a"):
        raise ValueError(f"direction must be a2b or b2a, got {direction!r}")
    if direction == "b2a" and not hasattr(model, "translate_back"):
        raise ValueError(f"{type(model).__name__} translates A -> B only: direction must be a2b")
    step = model.translate if direction == "a2b" else model.translate_back
    was_training = model.training
    model.eval()
    chunks = [
        step(images[start : start + batch_size].to(model.device)).float().cpu()
        for start in range(0, images.shape[0], batch_size)
    ]
    model.train(was_training)
    return torch.cat(chunks)


def translation_triplets(
    model, a: torch.Tensor, b: torch.Tensor | None = None, direction: str = "a2b"
) -> torch.Tensor:
    """[x_1, T(x_1), y_1, x_2, ...]: each input, its translation and, for paired data (``b``), its
    target; without ``b`` and for a two-way model the cycle back (A | A->B | A->B->A)."""
    translated = translate_images(model, a, direction)
    if b is not None:
        third = b.float()
    elif hasattr(model, "translate_back"):
        third = translate_images(model, translated, "b2a" if direction == "a2b" else "a2b")
    else:
        return torch.stack([a.float(), translated], dim=1).flatten(0, 1)
    channels = max(a.shape[1], translated.shape[1], third.shape[1])
    parts = [with_channels(x.float(), channels) for x in (a, translated, third)]
    return torch.stack(parts, dim=1).flatten(0, 1)
