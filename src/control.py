"""Change one feature of generated digits, not their class: `python src/control.py ckpt_path=…
attribute=thickness delta=1.0 method=gradient keep_class=true`.

Writes to <run>/control/ (or ``out_dir=``) ``<attribute>_<method>.png`` (rows = samples, columns =
steps from the start to start + delta) and ``<attribute>_<method>.json``: the change achieved
against the change asked (measured by morphometry), the class-flip rate, the drift of the other
attributes, FID / precision before and after. ``attribute=all`` / ``method=all`` run every pair and
add ``entanglement.json`` and ``entanglement.md`` (the table). src/sampling/control.py has the
methods.
"""

from __future__ import annotations

import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.config import check_schema
from src.utils import ConfigError, register_resolvers

register_resolvers()


def _check(cfg: DictConfig) -> None:
    check_schema(cfg)  # attribute / method names, ranges (src/config/schema.py)
    if cfg.delta is not None and cfg.delta == 0:
        raise ConfigError("delta=0: ask for a change (px, or radians for slant)")


def _selected(value: str, choices: tuple[str, ...]) -> tuple[str, ...]:
    return choices if value == "all" else (value,)


def control(cfg: DictConfig) -> dict:
    import torch

    from src.metrics.attributes import load_attribute_regressor
    from src.metrics.classifier import load_classifier
    from src.metrics.morphometry import CONTROLLABLE
    from src.metrics.scores import GenerativeScores
    from src.runs.checkpoints import load_checkpoint, run_data
    from src.sampling import is_translator, save_grid
    from src.sampling.control import METHODS
    from src.utils import write_json_atomic
    from src.utils.files import write_text_atomic
    from src.utils.project import provenance

    _check(cfg)
    model, run_cfg = load_checkpoint(cfg.ckpt_path)
    if is_translator(model):
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} holds a {type(model).__name__}, which has no latent space"
        )
    dataset = run_cfg.data.dataset
    if dataset != "mnist":
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} was trained on data={dataset}; the attributes are measured "
            "on digit strokes (train on data=mnist)"
        )
    model.to(cfg.device)
    regressor = load_attribute_regressor(dataset, cfg.device)
    classifier = load_classifier(dataset, cfg.device)
    data = run_data(run_cfg, cfg.paths.data_dir)
    scores = GenerativeScores(dataset, data.splits["test"][0][: cfg.n_real], cfg.device)
    spread = {name: float(regressor.std[regressor.index(name)]) for name in CONTROLLABLE}
    out_dir = (
        Path(cfg.out_dir)
        if cfg.out_dir
        else Path(cfg.ckpt_path).resolve().parent.parent / "control"
    )
    out_dir.mkdir(parents=True, exist_ok=True)

    seeded = torch.Generator().manual_seed(cfg.seed)
    z = model.sample_latent(cfg.measure_samples, generator=seeded, device="cpu")
    labels = None
    if model.num_classes:  # every class in turn, so the grid's rows show several
        labels = torch.arange(cfg.measure_samples) % model.num_classes
    context = {
        "ckpt_path": str(Path(cfg.ckpt_path).resolve()),
        "model": run_cfg.model._target_,
        "conditional": bool(model.num_classes),
        **provenance(),
    }
    rows = []
    for attribute in _selected(cfg.attribute, CONTROLLABLE):
        delta = float(cfg.delta if cfg.delta is not None else cfg.default_delta[attribute])
        for method in _selected(cfg.method, METHODS):
            started = time.time()
            result = edit_and_measure(
                cfg,
                model,
                regressor,
                classifier,
                scores,
                spread,
                z,
                labels,
                attribute,
                delta,
                method,
            )
            stem = f"{attribute}_{method}" + (
                "_no_class" if method == "gradient" and not cfg.keep_class else ""
            )
            result["grid"] = str(
                save_grid(result.pop("grid_images"), out_dir / f"{stem}.png", cfg.columns)
            )
            result["seconds"] = round(time.time() - started, 1)
            result.update(context)
            write_json_atomic(out_dir / f"{stem}.json", result)
            rows.append(result)
            print(summary_line(result), flush=True)
    if len(rows) > 1:
        table = {"rows": rows, **context, "measure_samples": cfg.measure_samples}
        write_json_atomic(out_dir / "entanglement.json", table)
        write_text_atomic(out_dir / "entanglement.md", entanglement_markdown(rows, context, cfg))
        print(f"wrote {out_dir / 'entanglement.md'}")
    return {"rows": rows, "out_dir": str(out_dir)}


def edit_and_measure(
    cfg, model, regressor, classifier, scores, spread, z, labels, attribute, delta, method
) -> dict:
    """One attribute edited by one method on every sample: the measurements, the grid images."""
    from src.metrics.entanglement import measure_edit, per_column_change
    from src.metrics.morphometry import measure
    from src.sampling import render
    from src.sampling.control import (
        direction_edit,
        fit_direction,
        gradient_edit,
        predicted_classes,
        typicality,
    )

    settings: dict
    if method == "gradient":
        path, settings = gradient_edit(
            model,
            regressor,
            classifier,
            z,
            labels,
            attribute,
            delta,
            columns=cfg.columns,
            keep_class=cfg.keep_class,
            **cfg.gradient,
        )
    else:
        direction, settings = fit_direction(
            model,
            lambda images: measure(images)[attribute],
            cfg.latent_direction.samples,
            cfg.seed + 1,  # fitted on other samples than the ones edited
            cfg.latent_direction.fit,
        )
        path = direction_edit(model, z, direction, delta, cfg.columns)
        settings["method"] = "direction"
    columns, n = path.shape[:2]
    flat_labels = None if labels is None else labels.repeat(columns)
    images = render(model, path.flatten(0, 1), flat_labels).unflatten(0, (columns, n))
    before, after = images[0], images[-1]
    start_class = labels if labels is not None else predicted_classes(classifier, before)
    measured = [measure(column) for column in images]  # each column once: ends and the path
    result = measure_edit(
        before,
        after,
        attribute,
        delta,
        start_class,
        classifier,
        spread,
        scores,
        measured=(measured[0], measured[-1]),
    )
    result.update(
        method=method,
        settings=settings,
        asked_per_column=[round(delta * c / (columns - 1), 4) for c in range(columns)],
        achieved_per_column=per_column_change(measured, attribute),
        typicality_before=round(float(typicality(path[0], model).mean()), 4),
        typicality_after=round(float(typicality(path[-1], model).mean()), 4),
        measure_samples=n,
    )
    # grid: row i = sample i's path (first `rows` samples), columns = steps
    result["grid_images"] = images[:, : cfg.rows].transpose(0, 1).flatten(0, 1)
    return result


def summary_line(result: dict) -> str:
    share = result["achieved_share"]
    return (
        f"{result['attribute']} {result['method']}: asked {result['asked']:+g}, achieved "
        f"{result['achieved_mean']:+.3f} ({100 * share:.0f} %), class flips "
        f"{flips(result)}, drift {result['mean_drift']:.3f}, FID "
        f"{result['fid_before']:.2f} -> {result['fid_after']:.2f}"
    )


def flips(result: dict) -> str:
    """The class-flip rate, with the share misread before the edit when there is one (a cGAN)."""
    text = f"{100 * result['class_flip_rate']:.1f} %"
    if result.get("misread_before_rate"):
        text += f" ({100 * result['misread_before_rate']:.1f} % before)"
    return text


def entanglement_markdown(rows: list[dict], context: dict, cfg) -> str:
    header = (
        f"# Entanglement: {context['model'].rsplit('.', 1)[-1]}\n\n"
        f"{context['date']}, commit {context['commit']}, {context['machine']}; "
        f"`{context['ckpt_path']}`; {rows[0]['measure_samples']} samples, FID / precision against "
        f"{cfg.n_real} real test digits. Achieved: the mean change measured by morphometry; drift: "
        "mean |change| of the other four attributes in units of their spread on real digits.\n\n"
        "| attribute | method | asked | achieved | share | >= 80 % of asked | class flips | "
        "mean drift | largest drift | FID before -> after | precision before -> after |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        largest = max(r["drift"], key=lambda k: r["drift"][k] or 0)
        method = r["method"] + (
            " + class" if r["method"] == "gradient" and r["settings"].get("keep_class") else ""
        )
        lines.append(
            f"| {r['attribute']} | {method} | {r['asked']:+g} | {r['achieved_mean']:+.3f} | "
            f"{100 * r['achieved_share']:.0f} % | {100 * r['share_reaching_80pc']:.0f} % | "
            f"{flips(r)} | {r['mean_drift']:.3f} | {largest} "
            f"{r['drift'][largest]:.3f} | {r['fid_before']:.2f} -> {r['fid_after']:.2f} | "
            f"{r['precision_before']:.3f} -> {r['precision_after']:.3f} |"
        )
    return header + "\n".join(lines) + "\n"


@hydra.main(version_base="1.3", config_path="../conf", config_name="control")
def main(cfg: DictConfig) -> None:
    from src.runs.cli import report_user_errors

    report_user_errors(control, cfg)


if __name__ == "__main__":
    main()
