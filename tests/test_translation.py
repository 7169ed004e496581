"""pix2pix and CycleGAN: the tasks are pure seeded functions, folders read as the papers ship them,
the losses give hand-computed values, the nets have the papers' shapes and receptive fields, each
update reaches only its own nets, and the models train -> evaluate -> translate from the config."""

import json

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from PIL import Image

from src.config import validate_config
from src.data.translation import (
    TranslationDataModule,
    colourize,
    digit_edges,
    disjoint_halves,
    grey_to_rgb,
    mask_region,
    to_grey,
)
from src.losses import (
    cycle_consistency_loss,
    identity_loss,
    l1_distance,
    least_squares_discriminator_loss,
    least_squares_generator_loss,
)
from src.models.translation import ImagePool
from src.nets.translation import (
    PatchDiscriminator,
    ResnetGenerator,
    UNetGenerator,
    receptive_field,
)
from src.runs.training import train
from src.utils import ConfigError
from tests.conftest import compose_script


# ----------------------------------------------------------------------------- tasks
def test_digit_edges_is_the_sobel_magnitude():
    image = torch.zeros(1, 1, 5, 5, dtype=torch.uint8)
    image[..., 2:] = 255  # a vertical step between columns 1 and 2
    edges = digit_edges(image)[0, 0]
    # columns 1 and 2 see the full step: |Sobel x| = 4 -> 255; flat areas 0; column 4 sees the
    # step down to the zero padding (|Sobel x| = 4 again)
    assert edges[2].tolist() == [0, 255, 255, 0, 255]


def test_mask_region_hides_one_seeded_square():
    images = torch.zeros(6, 1, 32, 32, dtype=torch.uint8)
    masked = mask_region(images, seed=3)
    assert ((masked == 128).flatten(1).sum(1) == 12 * 12).all()  # 3/8 of 32
    assert torch.equal(masked, mask_region(images, seed=3))
    assert not torch.equal(masked, mask_region(images, seed=4))
    # image i's square depends on (seed, i) only: the first three of six are the first three of 3
    assert torch.equal(mask_region(images[:3], seed=3), masked[:3])


def test_colourize_keeps_the_digit_through_to_grey():
    generator = torch.Generator().manual_seed(0)
    digits = torch.randint(0, 256, (4, 1, 8, 8), generator=generator, dtype=torch.uint8)
    digits[:, :, 0, 0], digits[:, :, 0, 1] = 0, 255  # full contrast in every image
    colour = colourize(digits, seed=1)
    assert colour.shape == (4, 3, 8, 8)
    assert not torch.equal(colour[0, 0], colour[0, 1])  # channels differ: a colour domain
    grey = to_grey(colour.float() / 127.5 - 1)
    original = digits.float() / 127.5 - 1
    assert torch.allclose(grey, original, atol=0.04)  # linear in intensity, up to uint8 rounding
    assert torch.equal(grey_to_rgb(digits)[:, 2], digits[:, 0])


def test_disjoint_halves_share_no_image():
    first, second = disjoint_halves(101, seed=5)
    assert len(first) == len(second) == 50
    assert not set(first.tolist()) & set(second.tolist())


def test_tasks_from_mnist(data_dir):
    edges = TranslationDataModule("edges2digit", data_dir, val_size=100)
    edges.setup()
    train = edges.splits["train"]
    assert torch.equal(train.a[:16], digit_edges(train.b[:16]))  # pairs stay pairs after the split
    batch = next(iter(edges.train_dataloader()))
    digits = ((batch[1] + 1) * 127.5).round().byte()
    assert torch.allclose(batch[0], digit_edges(digits).float() / 127.5 - 1, atol=1e-6)
    assert [t.shape[1:] for t in batch[:2]] == [(1, 32, 32), (1, 32, 32)]

    colour = TranslationDataModule(
        "mnist2colour", data_dir, val_size=100, channels_a=3, channels_b=3
    )
    colour.setup()
    test = colour.splits["test"]
    assert len(test) == 5000 and test.a.shape[1] == test.b.shape[1] == 3
    # built twice: the same images (a task is code plus a seed)
    again = TranslationDataModule(
        "mnist2colour", data_dir, val_size=100, channels_a=3, channels_b=3
    )
    again.setup()
    assert torch.equal(again.splits["test"].b, test.b)
    a, b, labels_a, labels_b = next(iter(colour.train_dataloader()))
    assert not torch.equal(labels_a, labels_b)  # unpaired: independent orders


def test_task_channels_must_match(data_dir):
    with pytest.raises(ValueError, match="3 and 3 channels"):
        TranslationDataModule("grey2colour", data_dir)
    with pytest.raises(ValueError, match="power of 2"):
        TranslationDataModule("edges2digit", data_dir, image_size=28)


# ----------------------------------------------------------------------------- folders
def write_images(folder, names, size=(40, 30), colour=True, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        shape = (size[1], size[0], 3) if colour else (size[1], size[0])
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / name)


@pytest.fixture
def paired_folder(tmp_path):
    names = [f"{i:03d}.png" for i in range(20)]
    for side in "AB":
        write_images(tmp_path / "pairs" / side / "train", names, seed=ord(side))
        write_images(tmp_path / "pairs" / side / "test", names[:6], seed=ord(side) + 1)
    return tmp_path / "pairs"


@pytest.fixture
def unpaired_folder(tmp_path):
    root = tmp_path / "unpaired"
    write_images(root / "trainA", [f"a{i}.png" for i in range(20)], colour=False)
    write_images(root / "trainB", [f"b{i}.jpg" for i in range(24)])
    write_images(root / "testA", [f"a{i}.png" for i in range(5)], colour=False)
    write_images(root / "testB", [f"b{i}.jpg" for i in range(5)])
    return root


def test_folders_read_as_the_papers_ship_them(paired_folder, unpaired_folder):
    paired = TranslationDataModule(
        "paired_folder",
        path=str(paired_folder),
        image_size=16,
        channels_a=3,
        channels_b=3,
        batch_size=4,
    )
    paired.setup()
    assert paired.splits["train"].a.shape == (18, 3, 16, 16)  # a tenth kept for validation
    assert paired.splits["test"].b.shape == (6, 3, 16, 16)
    # centre crop (30 x 30 of 40 x 30) and resize of test/000.png
    with Image.open(paired_folder / "A" / "test" / "000.png") as image:
        expected = image.crop((5, 0, 35, 30)).resize((16, 16), Image.Resampling.BICUBIC)
    assert torch.equal(
        paired.splits["test"].a[0], torch.from_numpy(np.asarray(expected).copy()).permute(2, 0, 1)
    )
    options = {"path": str(unpaired_folder), "image_size": 16, "channels_a": 1, "channels_b": 3}
    with pytest.raises(ValueError, match="batch_size=64 is more than the 18 training"):
        TranslationDataModule("unpaired_folder", **options).setup()
    unpaired = TranslationDataModule("unpaired_folder", batch_size=4, **options)
    unpaired.setup()
    a, b, labels_a, _ = next(iter(unpaired.train_dataloader()))
    assert a.shape[1] == 1 and b.shape[1] == 3 and (labels_a == -1).all()


def test_bad_folders_are_named(paired_folder, unpaired_folder):
    def build(task, path):
        data = TranslationDataModule(
            task, path=str(path), image_size=16, channels_a=3, channels_b=3
        )
        data.prepare_data()
        data.setup()

    (paired_folder / "B" / "train" / "000.png").rename(paired_folder / "B" / "train" / "x.png")
    with pytest.raises(ValueError, match="000.png has no counterpart in .*B/train"):
        build("paired_folder", paired_folder)
    for image in (unpaired_folder / "testB").iterdir():
        image.unlink()
    with pytest.raises(ValueError, match="testB has no images"):
        build("unpaired_folder", unpaired_folder)
    (unpaired_folder / "testB" / "broken.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        build("unpaired_folder", unpaired_folder)
    with pytest.raises(ValueError, match="does not exist"):
        build("unpaired_folder", unpaired_folder / "missing")


# ----------------------------------------------------------------------------- losses
def test_translation_losses_by_hand():
    real, fake = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 1.0])
    # (0 + 0.25) / 2 + (0 + 1) / 2
    assert least_squares_discriminator_loss(real, fake).item() == pytest.approx(0.625)
    assert least_squares_generator_loss(fake).item() == pytest.approx(0.5)  # (1 + 0) / 2
    x, y = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, -1.0]])
    assert l1_distance(x, y).item() == pytest.approx(1.25)  # (0.5 + 2) / 2
    a, b = torch.zeros(1, 2), torch.ones(1, 2)
    assert cycle_consistency_loss(a, a + 0.5, b, b - 2).item() == pytest.approx(2.5)
    assert identity_loss(a, a + 1, b, b + 0.25).item() == pytest.approx(1.25)


# ----------------------------------------------------------------------------- nets
@pytest.mark.parametrize("size", [8, 32])
def test_unet_skips_every_level(size):
    net = UNetGenerator(1, 3, size, width=4)
    assert len(net.down) == len(net.up) == int(np.log2(size))  # down to 1 x 1 and back
    out = net(torch.randn(2, 1, size, size))
    assert out.shape == (2, 3, size, size) and out.abs().max() <= 1
    # the innermost three decoder blocks (all but the output block at 8 px)
    dropouts = sum(isinstance(m, torch.nn.Dropout) for m in net.modules())
    assert dropouts == min(3, len(net.up) - 1)


@pytest.mark.parametrize("layers", [1, 2])
def test_patchgan_receptive_field(layers):
    # eval-mode batch norm: per-pixel affine (instance norm's statistics would couple all pixels)
    net = PatchDiscriminator(1, width=4, layers=layers, norm="batch").eval()
    image = torch.randn(1, 1, 64, 64, requires_grad=True)
    scores = net(image)
    scores[0, 0, scores.shape[2] // 2, scores.shape[3] // 2].backward()
    seen = (image.grad[0, 0].abs() > 0).nonzero()
    extent = (seen.max(0).values - seen.min(0).values + 1).tolist()
    # one logit sees a receptive_field-wide square (a border pixel's weight may be 0 by chance)
    assert max(extent) <= receptive_field(layers) and max(extent) >= receptive_field(layers) - 2
    assert receptive_field(3) == 70  # the paper's 70 x 70 PatchGAN


def test_resnet_generator_shape():
    net = ResnetGenerator(3, 1, width=4, blocks=2)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 1, 16, 16)


# ----------------------------------------------------------------------------- the models
def test_image_pool_fills_then_swaps_half():
    pool = ImagePool(4, (1, 1, 1))
    first = torch.arange(3.0).view(3, 1, 1, 1)
    assert torch.equal(pool.query(first), first) and pool.stored.item() == 3
    torch.manual_seed(0)
    second = torch.arange(10.0, 20.0).view(10, 1, 1, 1)
    out = pool.query(second)
    assert out[0].item() == 10 and pool.stored.item() == 4  # fills the last slot, used as is
    swapped = (out[1:] != second[1:]).flatten()
    # each later image: with probability 1/2 swapped for a stored one (old or newly stored)
    assert 0 < swapped.sum() < 9
    assert set(out[1:][swapped].flatten().tolist()) <= set(range(3)) | set(range(10, 20))
    assert torch.equal(ImagePool(0, (1, 1, 1)).query(second), second)


def one_step(model, a, b):
    optimizers = model.configure_optimizers()
    optimizers = optimizers[0] if isinstance(optimizers, tuple) else optimizers
    model.optimizers = lambda: optimizers
    model._check_now = lambda batch_idx: True
    model.manual_backward = lambda loss: loss.backward()
    model.training_step((a, b, None, None), 0)


def test_pix2pix_updates_by_hand(make_cfg):
    """SGD lr 1: G moves by the gradient of lambda L1 + D's generator objective on (a, G(a));
    D by half its objective on (a, b) vs (a, G(a)) detached; the L1-only ablation leaves D."""
    cfg = make_cfg(
        "model=pix2pix",
        "optimizer@model.optimizer_g=sgd",
        "optimizer@model.optimizer_d=sgd",
        "model.optimizer_g.lr=1.0",
        "model.optimizer_d.lr=1.0",
        "arch.dropout=0.0",
    )
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    a, b = torch.rand(4, 1, 32, 32) * 2 - 1, torch.rand(4, 1, 32, 32) * 2 - 1
    generator = [p.detach().clone() for p in model.generator.parameters()]
    discriminator = [p.detach().clone() for p in model.discriminator.parameters()]

    reference = instantiate(cfg.model)
    reference.load_state_dict(model.state_dict())
    fake = reference.generator(a)
    loss_d = 0.5 * reference.discriminator_objective(
        reference.discriminate(a, b), reference.discriminate(a, fake.detach())
    )
    grads_d = torch.autograd.grad(loss_d, list(reference.discriminator.parameters()))
    with torch.no_grad():
        for p, g in zip(reference.discriminator.parameters(), grads_d, strict=True):
            p -= g
    loss_g = 100 * l1_distance(fake, b) + reference.generator_objective(
        reference.discriminate(a, fake)
    )
    grads_g = torch.autograd.grad(loss_g, list(reference.generator.parameters()))

    one_step(model, a, b)
    for before, after, grad in zip(
        discriminator, model.discriminator.parameters(), grads_d, strict=True
    ):
        assert torch.allclose(before - after.detach(), grad, atol=1e-6)
    for before, after, grad in zip(generator, model.generator.parameters(), grads_g, strict=True):
        assert torch.allclose(before - after.detach(), grad, atol=1e-5, rtol=1e-4)

    ablation = instantiate(cfg.model, adversarial_weight=0.0)
    kept = [p.detach().clone() for p in ablation.discriminator.parameters()]
    one_step(ablation, a, b)
    after = ablation.discriminator.parameters()
    assert all(torch.equal(k, p) for k, p in zip(kept, after, strict=True))


def test_cyclegan_step_reaches_each_net_by_its_own_losses(make_cfg):
    cfg = make_cfg("model=cyclegan", "model.pool_size=0")
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    model.trainer = type("T", (), {"max_epochs": 4, "world_size": 1, "log_every_n_steps": 50})()
    a, b = torch.rand(4, 3, 32, 32) * 2 - 1, torch.rand(4, 3, 32, 32) * 2 - 1
    before = {k: v.clone() for k, v in model.state_dict().items()}
    one_step(model, a, b)
    after = model.state_dict()
    for net in ("generator_ab", "generator_ba", "discriminator_a", "discriminator_b"):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(net)), net
    assert [model.learning_rate_factor(e) for e in range(4)] == [1.0, 1.0, 1 - 1 / 3, 1 - 2 / 3]


def test_translation_configs_are_checked(make_cfg):
    with pytest.raises(ConfigError, match="unpaired: choose data= one of .*edges2digit"):
        validate_config(make_cfg("model=pix2pix", "data=mnist2fashion"))
    with pytest.raises(ConfigError, match="translation task .*choose model= one of .*cyclegan"):
        validate_config(make_cfg("model=gan", "data=edges2digit"))
    with pytest.raises(ConfigError, match="choose data= one of .*mnist2colour"):
        validate_config(make_cfg("model=cyclegan", "data=mnist"))
    with pytest.raises(ConfigError, match="no translation nets.*choose arch= one of .*resnet"):
        validate_config(make_cfg("model=cyclegan", "arch=mlp"))
    with pytest.raises(InstantiationException, match="needs equal channels"):
        instantiate(
            make_cfg(
                "model=cyclegan", "data=unpaired_folder", "data.channels_a=1", "data.path=/tmp"
            ).model
        )


@pytest.mark.slow
def test_pix2pix_and_cyclegan_train_evaluate_translate(make_cfg, tmp_path, data_dir, paired_folder):
    from src.evaluate import evaluate
    from src.sample import sample
    from src.translate import translate

    def script_cfg(name, ckpt, *overrides):
        return compose_script(name, f"ckpt_path={ckpt}", *overrides, data_dir=data_dir)

    scores = [
        "callbacks.generative_metrics.n_real=200",
        "callbacks.generative_metrics.kid_subset_size=50",
        "callbacks.generative_metrics.kid_subsets=2",
    ]
    runs = {
        "pix2pix": ["model=pix2pix", "data=inpaint"],
        "cyclegan": ["model=cyclegan", "data=mnist2colour", "model.pool_size=4"],
    }
    for name, overrides in runs.items():
        cfg = make_cfg(*overrides, *scores, keep_metrics=True)
        cfg.paths.output_dir = str(tmp_path / name)
        result = train(cfg)
        assert result["status"] == "completed"
        metrics = result["metrics"]
        assert 0 <= metrics["val/label_preservation"] <= 1 and metrics["val/fid"] > 0
        assert ("val/ssim" in metrics) == (name == "pix2pix")
        assert ("val/cycle_l1" in metrics) == (name == "cyclegan")
        assert (tmp_path / name / "samples" / "last.png").is_file()

        ckpt = str(tmp_path / name / "checkpoints" / "last.ckpt")
        evaluated = evaluate(script_cfg("evaluate", ckpt, "n_real=100", "kid_subset_size=50"))
        assert evaluated["task"] == cfg.data.task and "label_preservation" in evaluated
        identity = evaluate(
            script_cfg("evaluate", ckpt, "n_real=100", "kid_subset_size=50", "baseline=identity")
        )
        assert (tmp_path / name / "evaluation_identity.json").is_file()
        if name == "cyclegan":  # the identity map keeps every digit and cycles exactly
            assert identity["label_preservation"] == identity["source_accuracy"]
            assert identity["cycle_l1"] == 0
        else:
            assert identity["l1"] > 0 and identity["psnr"] > 0
        out = translate(script_cfg("translate", ckpt, "n=10"))
        arrays = np.load(out)
        assert arrays["outputs"].shape == arrays["inputs"].shape[:1] + arrays["outputs"].shape[1:]
        assert ("targets" in arrays) == (name == "pix2pix")
        with pytest.raises(ConfigError, match="use src/translate.py"):
            sample(script_cfg("sample", ckpt, f"out={tmp_path / 's.npz'}", "n=4"))

    folder = paired_folder / "A" / "test"
    ckpt = str(tmp_path / "cyclegan" / "checkpoints" / "last.ckpt")
    out = translate(script_cfg("translate", ckpt, f"input_dir={folder}", "direction=b2a"))
    arrays = np.load(out)
    assert arrays["outputs"].shape == (6, 3, 32, 32) and list(arrays["files"])[0] == "000.png"
    assert json.loads((tmp_path / "pix2pix" / "metrics.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_a_diverging_translator_is_recorded_and_stops(make_cfg, tmp_path):
    cfg = make_cfg(
        "model=pix2pix", "model.l1_weight=1e39"
    )  # inf in float32: G's loss is not finite
    cfg.paths.output_dir = str(tmp_path)
    result = train(cfg)
    # unchecked batches pass the NaN on to G's weights: whichever loss is checked first stops it
    assert result["status"] == "diverged" and result["failure"]["loss"].endswith(" loss")
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "diverged"


def test_colour_statistics_and_their_frechet_distance():
    from src.metrics.translation import colour_statistics, frechet_distance

    digits = torch.zeros(2, 1, 10, 10, dtype=torch.uint8)
    digits[:, :, :, :2] = 255  # ink: 20 of 100 pixels
    colour = colourize(digits, seed=0).float() / 127.5 - 1
    stats = colour_statistics(colour)
    ink, background = colour[:, :, 0, 0], colour[:, :, 0, 5]
    assert torch.allclose(stats, torch.cat([ink, background], dim=1), atol=1e-6)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 2, generator=generator, dtype=torch.float64)
    # same distribution: ~0; shifted by (1, 1): 2; scaled by 2: tr((2 - 1)^2 I) = 2
    assert frechet_distance(x, x) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(x, x + 1) == pytest.approx(2, abs=1e-6)
    assert frechet_distance(x, 2 * x) == pytest.approx(2 * 1.0, rel=0.05)
