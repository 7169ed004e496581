"""Faults a real run meets, injected: SIGKILL, a full disk, damaged caches and states, input that
would train nothing or write nowhere. None may lose more than the epoch it hit, or give a score
that differs from an undamaged run's."""

from __future__ import annotations

import csv
import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from src.population.run import population_checkpoint_path, train_population
from src.runs.cli import report_user_errors
from src.runs.training import train
from src.utils import PROJECT_ROOT, ConfigError
from src.utils.files import checksum_path, save_torch_checked, sha256_of
from tests.conftest import compose_script
from tests.faults import population_members

# a small EBGAN-PT run: 3 epochs of 3 batches, CSV rows every batch
SMALL_RUN = [
    "model=ebgan_pt",
    "model.margin=10",
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=3",
    "trainer.deterministic=true",
    "logger=csv",
]


def subprocess_env(data_dir: str) -> dict:
    # the fault helpers (tests.faults) import as a package from the project root
    return {
        **os.environ,
        "DATA_DIR": data_dir,
        "WANDB_MODE": "disabled",
        "PYTHONPATH": str(PROJECT_ROOT),
    }


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def weights(folder: Path) -> dict:
    saved = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return saved["state_dict"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_a_sigkilled_run_loses_only_its_epoch_and_resumes_to_the_straight_runs_end(
    make_cfg, tmp_path, data_dir
):
    """SIGKILL in epoch 1 (no handler runs): last.ckpt holds epoch 0, the CSV its rows; resumed
    into its own folder, the run ends with a straight run's weights and every one of its rows."""
    threads = torch.get_num_threads()
    killed = tmp_path / "killed"
    command = [
        sys.executable,
        str(PROJECT_ROOT / "src" / "train.py"),
        *SMALL_RUN,
        *["debug=fast", "print_config=false", "arch.sizeG=32", "arch.sizeD=16", "arch.nLayerG=2"],
        *["arch.nLayerD=2", "arch.latent_dim=8", f"torch_threads={threads}"],
        "callbacks.progress_bar=null",
        "callbacks.generative_metrics=null",
        "+callbacks.sigkill._target_=tests.faults.SigkillAt",
        "+callbacks.sigkill.epoch=1",
        "+callbacks.sigkill.batch=1",
        f"hydra.run.dir={killed}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(data_dir))
    assert done.returncode == -9, done.stderr[-2000:]
    assert not (killed / "metrics.json").exists()
    saved = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=False)
    # written at the end of epoch 0: 3 batches of a D and a G step
    assert saved["epoch"] == 0 and saved["global_step"] == 3 * 2
    on_disk = csv_rows(killed / "csv" / "metrics.csv")  # epoch 0's, and maybe some of epoch 1's
    assert "0" in {r["epoch"] for r in on_disk}

    def run(folder, *extra):
        cfg = make_cfg(*SMALL_RUN, f"torch_threads={threads}", *extra)
        cfg.paths.output_dir = str(folder)
        return train(cfg)

    straight = tmp_path / "straight"
    assert run(straight)["status"] == "completed"
    resumed = run(killed, f"ckpt_path={killed / 'checkpoints' / 'last.ckpt'}")
    assert resumed["status"] == "completed" and resumed["optimizer_steps"] == 3 * 3 * 2
    assert_same_weights(weights(straight), weights(killed))
    straight_rows = csv_rows(straight / "csv" / "metrics.csv")
    assert csv_rows(killed / "csv" / "metrics.csv") == straight_rows
    epoch_0 = [r for r in straight_rows if r["epoch"] == "0"]
    assert [r for r in on_disk if r["epoch"] == "0"] == epoch_0  # all there at the kill


@pytest.mark.slow
def test_a_sigkilled_population_relaunched_keeps_every_members_rows(tmp_path, data_dir):
    """A population SIGKILLed right after its state of epoch 0 is written resumes from it; each
    member's CSV holds the straight population's rows, epoch 0 included."""
    threads = torch.get_num_threads()
    straight = train_population(population_members(tmp_path / "straight", data_dir, threads))
    folder = tmp_path / "killed"
    command = [sys.executable, "-m", "tests.faults", "population", str(folder), data_dir]
    done = subprocess.run(
        [*command, str(threads)],
        capture_output=True,
        text=True,
        env=subprocess_env(data_dir),
        cwd=PROJECT_ROOT,
    )
    assert done.returncode == -9, done.stderr[-2000:]
    members = population_members(folder, data_dir, threads)
    assert population_checkpoint_path(members).is_file()
    resumed = train_population(members)
    for k, (a, b) in enumerate(zip(straight, resumed, strict=True)):
        assert a["metrics"] == b["metrics"] and b["status"] == "completed"
        rows = [
            csv_rows(tmp_path / f / f"member{k}" / "csv" / "metrics.csv")
            for f in ("straight", "killed")
        ]
        assert rows[0] == rows[1] and {r["epoch"] for r in rows[1]} == {"0", "1", "2"}
        assert_same_weights(
            weights(tmp_path / "straight" / f"member{k}"), weights(folder / f"member{k}")
        )


def _damage_flipped_bytes(entry: Path, other: dict, scorer) -> None:
    data = bytearray(entry.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    entry.write_bytes(bytes(data))


def _damage_other_images(entry: Path, other: dict, scorer) -> None:
    """Valid file, valid checksum, this key, the right shapes: the features of other images."""
    saved = torch.load(entry, weights_only=True)
    save_torch_checked({**saved, "features": other["features"]}, entry)


def _damage_another_sets_entry(entry: Path, other: dict, scorer) -> None:
    """Another real set's whole entry (key included) copied over this one, checksum and all."""
    save_torch_checked(other, entry)


def _damage_shape(entry: Path, other: dict, scorer) -> None:
    saved = torch.load(entry, weights_only=True)
    save_torch_checked({**saved, "features": saved["features"][:-1]}, entry)


@pytest.mark.parametrize(
    "damage",
    [_damage_flipped_bytes, _damage_other_images, _damage_another_sets_entry, _damage_shape],
)
def test_a_damaged_real_features_cache_scores_as_a_cold_one(
    mnist_test_images, tmp_path, monkeypatch, caplog, damage
):
    """Flipped bytes, the features of other images under a valid checksum, another set's entry,
    a wrong shape: each is named, moved aside and recomputed; the scores equal a cold cache's."""
    from src.metrics import real_cache
    from src.metrics.scores import GenerativeScores

    monkeypatch.setenv(real_cache.CACHE_ENV, str(tmp_path / "cache"))
    real, other_real = mnist_test_images[:300], mnist_test_images[300:600]
    fake = mnist_test_images[600:800]

    def scores(images):
        scorer = GenerativeScores("mnist", images, kid_subsets=3, kid_subset_size=50)
        return scorer, scorer.score(fake)

    scorer, cold = scores(real)
    scores(other_real)  # a second entry, of other images
    key = real_cache.real_set_key(scorer.classifier, real, scorer.device)
    entry = real_cache.entry_path(key)
    entries = list((tmp_path / "cache").glob("real_*.pt"))
    assert len(entries) == 2 and entry in entries
    other = torch.load(next(p for p in entries if p != entry), weights_only=True)
    damage(entry, other, scorer)
    with caplog.at_level(logging.WARNING):
        assert scores(real)[1] == cold
    assert any(str(entry) in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
    assert list((tmp_path / "cache").glob(f"real_{key}.pt.damaged-*"))
    assert scores(real)[1] == cold  # and the rewritten entry is read back as the cold one


@pytest.fixture(scope="module")
def mnist_test_images(data_dir):
    from src.data import load_split

    return load_split("mnist", data_dir, "test", allow_download=False)[0].unsqueeze(1)


@pytest.mark.slow
def test_a_damaged_population_state_is_set_aside_and_the_relaunch_completes(
    tmp_path, data_dir, monkeypatch, caplog
):
    """A state file with flipped bytes (or foreign content) is named, moved aside, and the members
    train from their first epoch again: the relaunch ends as a straight population does."""
    import src.population.run as run

    threads = torch.get_num_threads()
    straight = train_population(population_members(tmp_path / "straight", data_dir, threads))
    save = run._save_population

    def save_then_stop(path, state):
        save(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "_save_population", save_then_stop)
    members = population_members(tmp_path / "damaged", data_dir, threads)
    with pytest.raises(KeyboardInterrupt):
        train_population(members)
    monkeypatch.undo()
    state = population_checkpoint_path(members)
    state.write_bytes(state.read_bytes()[:-100] + b"\0" * 100)
    with caplog.at_level(logging.WARNING):
        relaunched = train_population(population_members(tmp_path / "damaged", data_dir, threads))
    assert any(str(state) in r.getMessage() for r in caplog.records)
    assert list(state.parent.glob(f"{state.name}.damaged-*"))
    assert not state.exists() and not checksum_path(state).exists()
    for a, b in zip(straight, relaunched, strict=True):
        assert b["status"] == "completed" and a["metrics"] == b["metrics"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["trainer.limit_train_batches=0"],
            "trainer.limit_train_batches=0: must be an integer >= 1",
        ),
        (["trainer.limit_train_batches=0.0001"], "trainer.limit_train_batches=0.0001 leaves none"),
        (["data.val_size=59990", "data.batch_size=16"], "data.batch_size=16 is more than the 10 "),
    ],
)
def test_a_run_that_would_take_no_step_is_refused_naming_the_key(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train(make_cfg("model=ebgan", *overrides))


def _mount_tmpfs(path: Path, size: int) -> bool:
    """A tmpfs of ``size`` bytes at ``path``, where this process may mount one (root)."""
    path.mkdir(parents=True)
    command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    try:
        return subprocess.run(command, capture_output=True).returncode == 0
    except OSError:  # no mount command
        return False


def _fill_up_at_the_second_checkpoint(monkeypatch) -> None:
    """src/utils/files.py's files: the second checkpoint's temporary file takes half its bytes,
    then the disk is full (ENOSPC), as on a real one."""
    from src.utils import files

    checkpoints = []

    def half_full_open(path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)  # noqa: SIM115 (the caller closes it)
        if mode == "wb" and ".last.ckpt." in Path(path).name:
            checkpoints.append(path)
            if len(checkpoints) > 1:
                write = handle.write

                def write_half(data):
                    write(bytes(data[: len(data) // 2]))
                    raise OSError(errno.ENOSPC, "No space left on device")

                handle.write = write_half
        return handle

    monkeypatch.setattr(files, "open", half_full_open, raising=False)


@pytest.mark.parametrize("disk", ["tmpfs", "patched_writer"])
def test_a_full_disk_keeps_the_last_checkpoint_and_records_why(
    make_cfg, tmp_path, monkeypatch, disk
):
    """The second epoch's checkpoint does not fit on the disk: the first stays whole (checksum
    and all, nothing half-written beside it) and metrics.json says failed and why. On a real
    full tmpfs (where one can be mounted) and with a writer that fails with ENOSPC half-way."""
    overrides = ["model=ebgan", "trainer.max_epochs=2", "callbacks.sample_grid=null"]
    folder = tmp_path / "disk"
    cfg = make_cfg(*overrides)
    cfg.paths.output_dir = str(folder / "run")
    if disk == "tmpfs":
        probe = make_cfg(*overrides, "trainer.max_epochs=1")
        probe.paths.output_dir = str(tmp_path / "probe")
        train(probe)
        size = (tmp_path / "probe" / "checkpoints" / "last.ckpt").stat().st_size
        if not _mount_tmpfs(folder, 4 * size + 256 * 1024):
            pytest.skip("cannot mount a tmpfs here (the patched writer variant still runs)")
        # other files grow during epoch 1: its checkpoint then finds half its size free
        with open_dict(cfg):
            cfg.callbacks.fill_disk = {
                "_target_": "tests.faults.FillDiskAt",
                "epoch": 1,
                "folder": str(folder),
                "leave": size // 2,
            }
    else:
        _fill_up_at_the_second_checkpoint(monkeypatch)
    try:
        with pytest.raises(OSError, match="No space left on device"):
            train(cfg)
        monkeypatch.undo()
        run = folder / "run"
        (folder / "filler").unlink(missing_ok=True)  # room to read what was written
        written = json.loads((run / "metrics.json").read_text())
        assert written["status"] == "failed"
        assert "No space left on device" in written["failure"]["message"]
        checkpoint = run / "checkpoints" / "last.ckpt"
        assert torch.load(checkpoint, weights_only=False)["global_step"] == 3 * 2  # epoch 0's
        assert checksum_path(checkpoint).read_text().split()[0] == sha256_of(checkpoint)
        assert sorted(p.name for p in checkpoint.parent.iterdir()) == [
            "last.ckpt",
            "last.ckpt.sha256",
        ]
    finally:
        if disk == "tmpfs":
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_damaged_checkpoint_is_named_when_a_run_resumes(make_cfg, tmp_path):
    cfg = make_cfg("model=ebgan")
    train(cfg)
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    resumed = make_cfg("model=ebgan", "trainer.max_epochs=2", f"ckpt_path={checkpoint}")
    resumed.paths.output_dir = str(tmp_path / "resumed")
    with pytest.raises(ConfigError, match=r"last.ckpt: its bytes do not match the sha256"):
        train(resumed)


def one_line_error(capsys, action, cfg) -> str:
    """What an entry point prints for ``cfg``: exit code 2 and one line, no stack trace."""
    with pytest.raises(SystemExit) as stopped:
        report_user_errors(action, cfg)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def image_folder(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    generator = torch.Generator().manual_seed(0)
    for i in range(24):
        pixels = torch.randint(0, 256, (16, 16, 3), generator=generator, dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(folder / f"{i:02d}.png")
    return folder


def test_image_folder_errors_are_one_line_and_leave_no_partial_cache(
    make_cfg, capsys, image_folder, tmp_path
):
    folder_run = [
        "model=gan",
        "arch=dcgan",
        "data=image_folder",
        f"data.path={image_folder}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.test_size=2",
        "data.val_size=2",
        "data.batch_size=4",
    ]
    line = one_line_error(capsys, train, make_cfg(*folder_run, "data.test_size=100"))
    assert "has 24 images" in line and "data.test_size" in line
    (image_folder / "25.png").write_bytes(b"not a png")
    line = one_line_error(capsys, train, make_cfg(*folder_run))
    assert "cannot read image" in line and "25.png" in line
    assert list((tmp_path / "cache").glob("*")) == []  # no half-built cache left behind


def test_resuming_other_nets_names_the_tensors_and_the_keys(make_cfg, capsys, tmp_path):
    train(make_cfg("model=ebgan"))
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    resumed = make_cfg("model=ebgan", "arch.sizeG=24", f"ckpt_path={checkpoint}")
    resumed.paths.output_dir = str(tmp_path / "resumed")
    line = one_line_error(capsys, train, resumed)
    assert "holds other nets than this run builds" in line
    assert "arch.sizeG=32 there, 24 here" in line and "generator." in line


def test_a_truncated_download_is_one_line(make_cfg, capsys, tmp_path, data_dir, caplog):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for source in (Path(data_dir) / "MNIST" / "raw").iterdir():
        (raw / source.name).write_bytes(source.read_bytes())
    images = next(raw.glob("train-images*"))
    images.write_bytes(images.read_bytes()[:100_000])
    cfg = make_cfg("model=ebgan")
    cfg.paths.data_dir = str(tmp_path / "data")
    line = one_line_error(capsys, train, cfg)
    assert images.name in line and "cannot be read or decompressed" in line
    assert not any(r.exc_info for r in caplog.records)  # no stack trace in the log either


@pytest.mark.parametrize(
    ("override", "message", "a_real_key"),
    [
        ("+model.foo=1", "model.foo: not a key of model=", "'margin'"),
        ("+data.colour=1", "data.colour: not a key of data=", "'batch_size'"),
    ],
)
def test_an_unknown_key_is_named_with_the_keys_there_are(
    make_cfg, capsys, override, message, a_real_key
):
    line = one_line_error(capsys, train, make_cfg("model=ebgan", override))
    assert message in line and "its keys are" in line and a_real_key in line


def test_an_optimizer_option_that_does_not_fit_the_chosen_optimizer_is_named(make_cfg, capsys):
    # WGAN-GP's config sets Adam's betas; SGD chosen for its critic would fail inside fit
    cfg = make_cfg("model=wgan_gp", "optimizer@model.optimizer_d=sgd")
    line = one_line_error(capsys, train, cfg)
    assert "model.optimizer_d.betas: not a key of torch.optim.SGD" in line
    assert "~model.optimizer_d.betas" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")
def test_a_gpu_asked_for_without_one_says_how_to_run_on_the_cpu(make_cfg, capsys):
    line = one_line_error(capsys, train, make_cfg("model=ebgan", "trainer.accelerator=gpu"))
    assert "no CUDA GPU" in line and "trainer.accelerator=cpu" in line


def test_a_data_dir_that_is_a_file_is_called_a_file(make_cfg, capsys, tmp_path):
    cfg = make_cfg("model=ebgan")
    (tmp_path / "a_file").write_text("x")
    cfg.paths.data_dir = str(tmp_path / "a_file")
    assert "is a file, not a folder" in one_line_error(capsys, train, cfg)


@pytest.mark.slow
def test_unwritable_outputs_are_one_line_before_any_work(make_cfg, capsys, tmp_path, data_dir):
    """train (the run folder, checked before Hydra makes it), evaluate and sample (their out=)."""
    from src.evaluate import evaluate
    from src.sample import sample

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    done = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "src" / "train.py"),
            "model=ebgan",
            "debug=fast",
            f"hydra.run.dir={blocker / 'run'}",
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(data_dir),
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"hydra.run.dir={blocker / 'run'}: cannot write" in done.stderr
    assert "is a file, not a folder" in done.stderr

    train(make_cfg("model=ebgan"))
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    for script, action in (("sample", sample), ("evaluate", evaluate)):
        name = "x.npz" if script == "sample" else "x.json"
        cfg = compose_script(
            script, f"ckpt_path={checkpoint}", f"out={blocker / name}", data_dir=data_dir
        )
        assert f"out={blocker / name}: cannot write there" in one_line_error(capsys, action, cfg)


def test_runs_go_under_the_folder_the_command_runs_from(tmp_path, monkeypatch, data_dir):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EBGAN_LAB_ROOT", raising=False)
    monkeypatch.delenv("DATA_DIR", raising=False)
    cfg = compose_script("train", data_dir=data_dir)
    assert cfg.paths.root_dir == str(tmp_path) and cfg.paths.log_dir == f"{tmp_path}/outputs"
    monkeypatch.setenv("EBGAN_LAB_ROOT", "/srv/lab")
    assert compose_script("train", data_dir=data_dir).paths.log_dir == "/srv/lab/outputs"


@pytest.mark.slow
def test_sigterm_records_a_populations_members_interrupted_and_a_relaunch_completes(
    tmp_path, data_dir, monkeypatch
):
    import signal

    import src.population.run as run
    from src.population.run import train_population_or_record_failure

    threads = torch.get_num_threads()
    save = run._save_population

    def save_then_preempted(path, state):
        save(path, state)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(run, "_save_population", save_then_preempted)
    members = population_members(tmp_path, data_dir, threads)
    with pytest.raises(KeyboardInterrupt):
        train_population_or_record_failure(members)
    monkeypatch.undo()
    for member in members:
        written = json.loads((member.output_dir / "metrics.json").read_text())
        assert written["status"] == "interrupted" and "signal 15" in written["failure"]["message"]
    results = train_population_or_record_failure(population_members(tmp_path, data_dir, threads))
    assert [r["status"] for r in results] == ["completed", "completed"]
    assert all(r["epochs_completed"] == 3 for r in results)
