"""The benchmark runs end to end and reports consistent numbers (its targets: in its output)."""

import json

import pytest
import torch

from src.benchmark import autocast_context, compose_cfg, main


@pytest.mark.slow
def test_benchmark_measures_every_quantity(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("DATA_DIR", data_dir)
    out = tmp_path / "bench.json"
    result = main(
        [
            "--batches",
            "3",
            "--rounds",
            "2",
            "--cells",
            "mlp small (2x400 / 2x128)",
            "--out",
            str(out),
            "--roofline-size",
            "256",
            "--metrics-samples",
            "1000",
        ]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    cell = result["cells"][0]
    assert (
        cell["plain_batches_s"] > 0
        and cell["lightning_batches_s"] > 0
        and cell["lightning_bar_batches_s"] > 0
    )
    # the best of the rounds counts, for every loop
    assert (
        len(cell["rounds"]["plain"])
        == len(cell["rounds"]["lightning"])
        == len(cell["rounds"]["lightning_bar"])
        == 2
    )
    assert cell["plain_batches_s"] == max(cell["rounds"]["plain"])
    assert cell["lightning_batches_s"] == max(cell["rounds"]["lightning"])
    assert (
        abs(cell["lightning_vs_plain"] - cell["lightning_batches_s"] / cell["plain_batches_s"])
        < 1e-9
    )
    assert (
        abs(
            cell["lightning_bar_vs_plain"]
            - cell["lightning_bar_batches_s"] / cell["plain_batches_s"]
        )
        < 1e-9
    )
    # by hand, EBGAN on 2x400 / 2x128 MLPs, batch 64: G 0.35 M MAC/sample, D 0.2 M;
    # forward + backward of G once, D on real and fake, D again in G's step (input grads only) ->
    # ~2.7 M MAC x 64 = 0.34 GFLOP
    assert 0.28 < cell["gflop_per_batch"] < 0.40
    assert 0 < cell["batch_production_share"] < 1 and result["roofline_gflops"] > 0
    assert result["metrics"]["samples"] == 1000 and result["metrics"]["is_fid_kid_s"] > 0


def test_benchmark_configs_keep_or_drop_the_progress_bar_and_mirror_the_precision(
    tmp_path, data_dir
):
    cell = ["model=ebgan", "arch=mlp"]
    assert "progress_bar" not in compose_cfg(cell, str(tmp_path), data_dir).callbacks
    assert "progress_bar" in compose_cfg(cell, str(tmp_path), data_dir, progress_bar=True).callbacks
    assert (
        "generative_metrics"
        not in compose_cfg(cell, str(tmp_path), data_dir, progress_bar=True).callbacks
    )
    with autocast_context(
        compose_cfg([*cell, "trainer.precision=bf16-mixed"], str(tmp_path), data_dir)
    ):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast_context(compose_cfg(cell, str(tmp_path), data_dir)):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32


def test_importing_the_project_turns_on_huge_pages_for_large_cpu_tensors():
    import os

    import src  # noqa: F401

    assert os.environ.get("THP_MEM_ALLOC_ENABLE") == "1"


def test_no_nvml_probe_per_optimizer_step_without_an_nvidia_driver():
    import ctypes
    import os

    import src.models  # noqa: F401  (imports Lightning, which asks for the NVML-based CUDA check)

    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    # no driver: each torch.cuda.is_available() (once per Adam.step) would retry loading it
    except OSError:
        assert os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "0"
    else:
        assert os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1"
