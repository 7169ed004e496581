"""The benchmark runs end to end and reports consistent numbers (speed targets live in its output, not here)."""

import json

from src.benchmark import main


def test_benchmark_measures_every_quantity(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("DATA_DIR", data_dir)
    out = tmp_path / "bench.json"
    result = main(["--batches", "3", "--cells", "mlp small (2x400 / 2x128)", "--out", str(out),
                   "--roofline-size", "256", "--metrics-samples", "1000"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    cell = result["cells"][0]
    assert cell["plain_batches_s"] > 0 and cell["lightning_batches_s"] > 0
    assert abs(cell["lightning_vs_plain"] - cell["lightning_batches_s"] / cell["plain_batches_s"]) < 1e-9
    # by hand, EBGAN on 2x400 / 2x128 MLPs, batch 64: G 0.35 M MAC/sample, D 0.2 M; forward + backward of
    # G once, D on real and fake, D again in G's step (input grads only) -> ~2.7 M MAC x 64 = 0.34 GFLOP
    assert 0.28 < cell["gflop_per_batch"] < 0.40
    assert 0 < cell["batch_production_share"] < 1 and result["roofline_gflops"] > 0
    assert result["metrics"]["samples"] == 1000 and result["metrics"]["is_fid_kid_s"] > 0
