"""``magphase report RUN``: one Markdown report with every table and figure of the paper.

Reads only what the stages wrote (paths from :class:`magphase.rundir.RunLayout`): tables, JSON and
PNGs. It trains and samples nothing: Figs. 4-5 come from the sample stage, the class probe from the
flow2 stage. It copies every figure beside ``report.md`` so the folder stands alone, and puts the
paper's published numbers (:mod:`magphase.evaluation.paper`) next to this run's. Missing stages are
listed, not fatal, so a partial run still gets a report of what exists.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from magphase.config import MagphaseConfig, load_config
from magphase.conventions import SPLITS
from magphase.evaluation.paper import PAPER_KEY_NUMBERS, PAPER_TABLE3, fmt_mean_std
from magphase.rundir import FIG4_NAME, FIG5_NAME, RunLayout, hardware_summary
from magphase.utils.atomic import atomic_path, atomic_write_text

log = logging.getLogger(__name__)


REQUIRED_SECTIONS = (
    "Table 1",
    "Table 3",
    "Table 4",
    "Substitution",
    "Additive",
    "Fig. 2",
    "Fig. 3",
    "Fig. 4",
    "Fig. 5",
    "Run time",
)


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def _copy_figure(src: Path, report_dir: Path, name: str | None = None) -> str | None:
    if not src.is_file():
        return None
    dst = report_dir / (name or src.name)
    if src.resolve() != dst.resolve():
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
    return dst.name


def _figure(lines: list[str], title: str, rel: str | None, missing: str) -> None:
    lines.append(f"### {title}\n")
    lines.append(f"![{title}]({rel})\n" if rel else f"_{missing}_\n")


def _class_probe_text(probe: dict[str, Any]) -> str:
    """Markdown of the flow2 stage's class probe record (``RUN/flow/stage2/class_probe.json``)."""
    train, val = probe["train"], probe["val"]

    def fmt(x: float | None) -> str:
        return "–" if x is None else f"{x:.3f}"

    seqs = list(val["per_sequence"])
    rows = ["| split | latents (abnormal) | AUROC | " + " | ".join(seqs) + " |"]
    rows.append("|---" * (3 + len(seqs)) + "|")
    for r in (train, val):
        cells = " | ".join(fmt(r["per_sequence"].get(s)) for s in seqs)
        rows.append(f"| {r['split']} | {r['n']} ({r['n_abnormal']}) | {fmt(r['auroc'])} | {cells} |")
    text = (
        "Beyond the paper: the stage-2 model used as a classifier. Each labelled latent is scored by "
        "its flow-matching loss under the normal minus under the abnormal class token (shared noise "
        f"and t, {val['repeats']} draws). AUROC near 0.5 on val means the class condition carries no "
        "abnormality that generalises (Fig. 5's two halves then look alike); high on train but not "
        "on val means it memorised training volumes.\n\n" + "\n".join(rows) + "\n"
    )
    return text


def _table3_with_paper(layout: RunLayout) -> str | None:
    path = layout.autoencoder_eval / "table3.csv"
    if not path.is_file():
        return None
    return _read(path.with_suffix(".md"))


def _paper_table3() -> str:
    rows = ["| Sequence | Phase coherence | Mag. SSIM | Mag. PSNR (dB) |", "|---|---|---|---|"]
    for seq, values in PAPER_TABLE3.items():
        cells = [fmt_mean_std(values[m], d) for m, d in (("phase_coherence", 4), ("ssim", 3), ("psnr", 1))]
        rows.append(f"| {seq} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _downstream_key_numbers(layout: RunLayout) -> str | None:
    """This run's numbers at the points the paper quotes, beside the paper's."""
    path = layout.downstream / "summary.csv"
    if not path.is_file():
        return None
    summary = pd.read_csv(path)
    if "config" not in summary.columns:
        return None

    def value(config: str, metric: str) -> str:
        row = summary[summary["config"] == config]
        mean_col, std_col = f"{metric}_mean", f"{metric}_std"
        if row.empty or mean_col not in row or pd.isna(row[mean_col].iloc[0]):
            return "n/a"
        std = row[std_col].iloc[0] if std_col in row else float("nan")
        return f"{row[mean_col].iloc[0]:.3f} ± {0.0 if pd.isna(std) else std:.3f}"

    # Additive configurations are named add<percent>; the paper's point, or the nearest one run.
    additive = {
        int(str(c)[3:]) / 100: str(c)
        for c in summary["config"]
        if str(c).startswith("add") and str(c)[3:].isdigit()
    }
    rows = ["| Quantity | Paper (fastMRI) | This run |", "|---|---|---|"]
    for name, published, config, metric in PAPER_KEY_NUMBERS:
        paper = fmt_mean_std(published)
        if isinstance(config, float):
            if not additive:
                rows.append(f"| {name} | {paper} | n/a |")
                continue
            nearest = min(additive, key=lambda f: (abs(f - config), -f))
            if abs(nearest - config) > 1e-9:
                name = f"{name} (this run: {additive[nearest]}, nearest run)"
            config = additive[nearest]
        rows.append(f"| {name} | {paper} | {value(config, metric)} |")
    return "\n".join(rows) + "\n"


def _protocol_table(cfg: MagphaseConfig) -> str:
    """This run's evaluation protocol beside the paper's (2.4), deviations marked."""
    ev, pipe = cfg.evaluation, cfg.pipeline
    tenths = [round(0.1 * k, 1) for k in range(11)]

    def pct(fracs: tuple[float, ...]) -> str:
        return ", ".join(f"{round(100 * f):d}" for f in sorted(fracs, reverse=True)) + " %"

    def selection(on: bool, criterion: str) -> str:
        return f"{criterion}, up to {pipe.max_selection_candidates} snapshots" if on else "off (last EMA)"

    rows = [
        ("real-vs-synthetic classifiers per sequence", str(ev.realfake.runs), "5"),
        ("synthetic test sets per sequence", str(ev.realfake.n_test_sets), "4"),
        ("stage-1 guidance w (real-vs-synthetic)", f"{ev.realfake.guidance:g}", "1"),
        ("downstream classifiers per configuration", str(ev.downstream.runs), "5"),
        ("substitution real fractions", pct(ev.downstream.real_fractions), pct(tuple(tenths))),
        ("additive synthetic fractions", pct(ev.downstream.additive_fractions), pct(tuple(tenths[1:]))),
        ("stage-2 guidance w (downstream)", f"{ev.downstream.guidance:g}", "2"),
        (
            "stage-1 checkpoint",
            selection(pipe.select_stage1, "lowest val AUROC"),
            "lowest val real-vs-synthetic AUROC",
        ),
        (
            "stage-2 checkpoint",
            selection(pipe.select_stage2, "highest val AUROC"),
            "highest val downstream AUROC",
        ),
    ]
    out = ["| setting | this run | paper | |", "|---|---|---|---|"]
    differs = 0
    for name, ours, paper in rows:
        same = ours == paper or (name.endswith("checkpoint") and not ours.startswith("off"))
        differs += not same
        out.append(f"| {name} | {ours} | {paper} | {'' if same else 'differs'} |")
    lead = (
        "This run follows the paper's protocol in every setting below."
        if not differs
        else f"{differs} setting(s) differ from the paper's protocol (reduced for the compute budget of "
        "this preset); mean ± std then rest on fewer runs and the curves on coarser fractions."
    )
    return lead + "\n\n" + "\n".join(out) + "\n"


def _evaluation_sets(layout: RunLayout) -> str | None:
    """Volumes and patches the downstream AUROCs rest on, and the abnormal findings in each split.

    Volumes, not patches, are the independent units of the test AUROCs; a reader needs their number
    (and which lesion kinds they hold) to judge a small run's numbers. Findings are the manifest's
    ``finding`` column, the key the splits were stratified by.
    """
    from magphase.data.store import Store
    from magphase.evaluation.downstream import LABELLED

    lines: list[str] = []
    if (layout.patches / "manifest.csv").is_file():
        m = Store(layout.patches).manifest
        lab = m[m["label"].isin(LABELLED)]
        lines += [
            "| split | abnormal volumes | abnormal patches | normal volumes | normal patches |",
            "|---|---:|---:|---:|---:|",
        ]
        for split in SPLITS:
            sub = lab[lab["split"] == split]
            ab, no = sub[sub["label"] == "abnormal"], sub[sub["label"] == "normal"]
            lines.append(
                f"| {split} | {ab['volume'].nunique()} | {len(ab)} | {no['volume'].nunique()} | {len(no)} |"
            )
        if "finding" in lab.columns:
            vols = lab[lab["label"] == "abnormal"].drop_duplicates("volume")
            vols = vols[vols["finding"].fillna("") != ""]
            if len(vols):
                lines += ["", "Abnormal volumes by their most frequent finding:", ""]
                for split in SPLITS:
                    mix = vols.loc[vols["split"] == split, "finding"].value_counts()
                    if len(mix):
                        lines.append(f"- {split}: " + ", ".join(f"{k} {int(v)}" for k, v in mix.items()))
    if (layout.external_patches / "manifest.csv").is_file():
        e = Store(layout.external_patches).manifest
        counts = e[e["label"].isin(LABELLED)].groupby("label")["volume"].nunique()
        n_ab, n_no = int(counts.get("abnormal", 0)), int(counts.get("normal", 0))
        lines += ["", f"External test set: {n_ab} abnormal and {n_no} normal volumes."]
    if not lines:
        return None
    lines += [
        "",
        "Volumes are the independent units: with a handful of abnormal test volumes the test AUROC "
        "mostly measures whether their lesions resemble those of the training volumes.",
    ]
    return "\n".join(lines) + "\n"


def _runtime_table(layout: RunLayout) -> tuple[str, float]:
    records = layout.stage_records()
    rows = ["| Stage | Seconds | Finished | Device |", "|---|---|---|---|"]
    total = 0.0
    for stage, rec in records.items():
        total += float(rec.get("seconds", 0.0))
        rows.append(
            f"| {stage} | {rec.get('seconds', '')} | {rec.get('finished', '')} | {rec.get('device', '')} |"
        )
    rows.append(f"| **total** | {total:.1f} | | |")
    return "\n".join(rows) + "\n", total


def write_report(run: RunLayout | str | Path, cfg: MagphaseConfig | None = None) -> Path:
    """Write ``RUN/report/report.md`` (+ figures beside it). Returns its path."""
    layout = run if isinstance(run, RunLayout) else RunLayout(Path(run))
    if cfg is None:
        cfg_path = layout.config_file
        cfg = load_config(cfg_path if cfg_path.is_file() else None)
    report_dir = layout.report
    report_dir.mkdir(parents=True, exist_ok=True)
    missing: list[str] = []
    lines: list[str] = [f"# magphase report: {cfg.name}\n"]
    lines.append(
        "Reproduction of *Generative Modeling of Complex-Valued Brain MRI Data* on "
        + (
            "real data from `" + str(cfg.data.raw) + "`"
            if cfg.data.raw
            else "magphase's simulated fastMRI-format data"
        )
        + f". Seed {cfg.seed}. The paper's published numbers stand beside this run's; on simulated data and "
        "reduced CPU budgets they are a reference, not a target every preset can reach.\n"
    )

    def section(title: str, body: str | None, note: str | None = None) -> None:
        lines.append(f"## {title}\n")
        if body is None:
            missing.append(title)
            lines.append("_Not produced by this run (stage not run yet)._\n")
        else:
            lines.append(body.strip() + "\n")
        if note:
            lines.append(note + "\n")

    section(
        "Table 1: patches by class, sequence and split",
        _read(layout.prepare / "table1.md"),
        "Paper (fastMRI): 70,794 patches; train 58,956 / val 5,584 / test 6,254.",
    )
    ext = _read(layout.prepare_external / "table_external.md")
    if ext:
        lines.append("### External test set (paper Table 2 analogue)\n")
        lines.append(ext.strip() + "\n")
    section(
        "Table 3: autoencoder reconstruction quality (test split)",
        _table3_with_paper(layout),
        "Paper Table 3:\n\n" + _paper_table3(),
    )
    realfake = _read(layout.realfake / "table4.md")
    section("Table 4: real-vs-synthetic latent classifier AUROC", realfake)
    downstream = _read(layout.downstream / "summary.md")
    section("Substitution and Additive experiments (downstream normal vs abnormal AUROC)", downstream)
    if cfg.pipeline.phasegen:
        pg_dir = layout.phasegen_eval
        section(
            "PhaseGen: generated phase for real magnitudes (test split)",
            _read(pg_dir / "phasegen_phase.md"),
            "Smoothness: magnitude-weighted coherence of neighbouring phase differences (1: flat). "
            "Agreement: how well a phase matches the real one up to a global offset (constant phase = the "
            "mean-phase baseline). PhaseGen keeps the magnitude exactly; see docs/phasegen.md.",
        )
        _figure(
            lines,
            "PhaseGen phases beside the real phase",
            _copy_figure(pg_dir / "phasegen_phases.png", report_dir),
            "the phasegen stage has not run",
        )
    lines.append("### Protocol beside the paper's\n")
    lines.append(_protocol_table(cfg))
    sets = _evaluation_sets(layout) if downstream is not None else None
    if sets:
        lines.append("### Evaluation sets\n")
        lines.append(sets)
    key = _downstream_key_numbers(layout)
    if key:
        lines.append("### Key numbers beside the paper's\n")
        lines.append(key)
    lines.append("## Figures\n")
    fig_dir = layout.downstream
    _figure(
        lines,
        "Fig. 2: example training patches (magnitude, phase)",
        _copy_figure(layout.prepare / "fig2_patches.png", report_dir),
        "prepare has not run",
    )
    _figure(
        lines,
        "Fig. 3: autoencoder reconstructions",
        _copy_figure(layout.autoencoder_eval / "fig3_reconstructions.png", report_dir),
        "autoencoder evaluation has not run",
    )
    flow_figs = {
        "fig4": _copy_figure(layout.sample_figures / FIG4_NAME, report_dir),
        "fig5": _copy_figure(layout.sample_figures / FIG5_NAME, report_dir),
    }
    _figure(
        lines,
        "Fig. 4: stage-1 samples beside real patches",
        flow_figs.get("fig4"),
        "the sample stage has not run",
    )
    _figure(
        lines,
        "Fig. 5: stage-2 normal vs abnormal samples",
        flow_figs.get("fig5"),
        "the sample stage has not run",
    )
    probe = json.loads(layout.class_probe.read_text()) if layout.class_probe.is_file() else None
    probe_text = _class_probe_text(probe) if probe else None
    if probe_text:
        lines.append("### Stage-2 class probe\n")
        lines.append(probe_text)
    _figure(
        lines,
        "Fig. 6: Substitution experiment, fastMRI-style test split",
        _copy_figure(fig_dir / "fig6_substitution_test.png", report_dir),
        "downstream has not run",
    )
    _figure(
        lines,
        "Fig. 7: Substitution experiment, external test set",
        _copy_figure(fig_dir / "fig7_substitution_external.png", report_dir),
        "no external test result",
    )
    _figure(
        lines,
        "Fig. 8: Additive experiment",
        _copy_figure(fig_dir / "fig8_additive.png", report_dir),
        "downstream has not run",
    )
    for title, key_ in (("Fig. 2", None), ("Fig. 3", None), ("Fig. 4", "fig4"), ("Fig. 5", "fig5")):
        if key_ and not flow_figs.get(key_):
            missing.append(title)
    runtime, total = _runtime_table(layout)
    lines.append("## Run time and hardware\n")
    lines.append(runtime)
    hw = layout.read_hardware() or hardware_summary()
    lines.append("```\n" + json.dumps(hw, indent=2) + "\n```\n")
    if missing:
        lines.append("## Missing\n")
        lines.append("\n".join(f"- {m}" for m in missing) + "\n")
    path = atomic_write_text("\n".join(lines), layout.report_file)
    meta: dict[str, Any] = {"missing": missing, "total_seconds": total, "hardware": hw, "class_probe": probe}
    atomic_write_text(json.dumps(meta, indent=2) + "\n", report_dir / "report.json")
    log.info("wrote %s", path)
    return path
