"""src/curves.py: epoch curves read from a run's CSV log, Spearman by hand, the CLI's figure."""

import math

import pytest

from src.curves import main, read_curve, spearman


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [9, 7, 5, 1]) == pytest.approx(-1.0)
    # ranks x: 1 2 3 4, y: 1 3 2 4 -> d^2 = 0 1 1 0 -> 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 5, 3, 7]) == pytest.approx(0.8)
    # ties share ranks: y = (1, 2.5, 2.5, 4) against x = 1..4 -> Pearson of the ranks
    assert spearman([1, 2, 3, 4], [0, 5, 5, 9]) == pytest.approx(0.9486833, rel=1e-6)
    assert math.isnan(spearman([1, 2], [3, 4])) and math.isnan(spearman([1, 2, 3], [5, 5, 5]))
    assert spearman([1, 2, float("nan"), 4], [1, 2, 3, 4]) == pytest.approx(1.0)


def write_log(run, rows):
    (run / "csv").mkdir(parents=True)
    keys = [
        "epoch",
        "step",
        "train/loss_d",
        "train/convergence_epoch",
        "val/fid",
        "val/elapsed_seconds",
    ]
    lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in rows]
    (run / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_epoch_values_are_merged_across_rows_and_step_values_left_out(tmp_path, capsys):
    run = tmp_path / "run"
    write_log(
        run,
        [
            {"epoch": 0, "step": 49, "train/loss_d": 0.5},
            {"epoch": 0, "step": 99, "val/fid": 30.0, "val/elapsed_seconds": 60.0},
            {"epoch": 0, "step": 99, "train/convergence_epoch": 0.3},
            {
                "epoch": 1,
                "step": 199,
                "val/fid": 20.0,
                "val/elapsed_seconds": 121.0,
                "train/convergence_epoch": 0.2,
            },
            {
                "epoch": 2,
                "step": 299,
                "val/fid": 25.0,
                "val/elapsed_seconds": 180.0,
                "train/convergence_epoch": 0.25,
            },
        ],
    )
    curve = read_curve(run)
    assert curve["epoch"] == [1.0, 2.0, 3.0] and "train/loss_d" not in curve
    assert curve["val/fid"] == [30.0, 20.0, 25.0]
    assert curve["train/convergence_epoch"] == [0.3, 0.2, 0.25]
    figure = tmp_path / "fig.png"
    main([str(run), "--correlate", "train/convergence_epoch", "--out", str(figure)])
    printed = capsys.readouterr().out
    assert "(60, 30), (121, 20), (180, 25)" in printed and "= 1.00" in printed
    assert figure.stat().st_size > 0


def test_a_run_without_the_key_or_the_log_is_named(tmp_path):
    run = tmp_path / "run"
    write_log(run, [{"epoch": 0, "step": 9, "val/fid": 3.0, "val/elapsed_seconds": 5.0}])
    with pytest.raises(SystemExit):
        main([str(run), "--y", "val/is"])
    with pytest.raises(SystemExit):  # one legend name per run
        main([str(run), "--labels", "a;b"])
    with pytest.raises(FileNotFoundError, match="logger=csv"):
        read_curve(tmp_path)
