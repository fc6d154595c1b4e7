"""The benchmark's outputs: results.json, report.md (medians, spreads, ratios to pacs-engine) and PNG plots."""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger(__name__)

REFERENCE = "pacs-engine"
PHASE_TITLES = {
    "cstore_1": "C-STORE ingest, 1 association (DCMTK storescu)",
    "cstore_4": "C-STORE ingest, 4 concurrent associations (DCMTK storescu)",
    "stow": "STOW-RS ingest (httpx, ~32 MB multipart requests)",
    "storage": "Storage on disk after ingest (du of the storage folder, index included)",
    "cget": "C-GET of the main series, uncompressed (DCMTK getscu)",
    "cget_stored": "C-GET of the main series in the stored syntax (pacs-engine's C-GET SCU proposing every lossless syntax)",
    "cmove": "C-MOVE of the main series to the bench's storescp (DCMTK movescu)",
    "frame_latency": "WADO-RS frame latency, random frames, stored syntax (transfer-syntax=*)",
    "first_image": "Time to first image (new connection: QIDO instances, then frame 1)",
    "series_low_res": "Whole series at the lowest resolution offered (pacs-engine: series /frames?level=2; "
    "others: every frame at full resolution)",
    "series_metadata": "WADO-RS series metadata",
    "qido": "QIDO-RS latency",
    "mixed_load": "Mixed load: concurrent frame readers while storescu stores another study",
    "memory": "Peak resident memory of the server (VmHWM) after ingest and all reads",
    "host_speed": "Host speed: a fixed CPU task timed in the bench process before each read phase, the target "
    "idle (not a target's figure: ×ratio above 1 means the host was that much slower while this target ran "
    "than while pacs-engine ran)",
}
_HIGHER_IS_BETTER = ("_per_s", "input_over_stored")
# The figure each phase is judged by; plotted and used for the targets check.
HEADLINE = {
    "cstore_1": "mb_per_s", "cstore_4": "mb_per_s", "stow": "mb_per_s", "storage": "mb", "cget": "seconds",
    "cget_stored": "seconds", "cmove": "seconds", "frame_latency": "p50_ms", "first_image": "ms",
    "series_low_res": "seconds", "series_metadata": "ms", "qido": "instances_ms", "mixed_load": "frames_per_s",
    "memory": "peak_rss_mb",
}


def higher_is_better(metric: str) -> bool:
    return any(metric.endswith(s) for s in _HIGHER_IS_BETTER)


def summarise(results: dict[str, Any]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """phase -> metric -> target -> {median, min, max, n, ratio}; ratio = median / pacs-engine's median.

    The host-speed checks of each target count as one more phase, "host_speed".
    """
    summary: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for target in results["targets"]:
        runs_by_phase = {phase: entry["runs"] for phase, entry in target["phases"].items()}
        if target.get("host_speed"):
            runs_by_phase["host_speed"] = target["host_speed"]
        for phase, runs in runs_by_phase.items():
            metrics: dict[str, list[float]] = {}
            for run in runs:
                for metric, value in run.items():
                    metrics.setdefault(metric, []).append(float(value))
            for metric, values in metrics.items():
                summary.setdefault(phase, {}).setdefault(metric, {})[target["name"]] = {
                    "median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}
    for by_metric in summary.values():
        for per_target in by_metric.values():
            reference = per_target.get(REFERENCE, {}).get("median")
            for cell in per_target.values():
                if reference:
                    cell["ratio"] = cell["median"] / reference
    return summary


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _cell(cell: dict[str, float] | None) -> str:
    if cell is None:
        return "–"
    text = _number(cell["median"])
    if cell["n"] > 1:
        text += f" ({_number(cell['min'])}–{_number(cell['max'])})"
    if "ratio" in cell:
        text += f" ×{cell['ratio']:.2f}"
    return text


def _phase_table(phase: str, metrics: dict[str, dict[str, dict[str, float]]], names: Sequence[str]) -> list[str]:
    shown = [n for n in names if any(n in per for per in metrics.values())]
    lines = [f"### {PHASE_TITLES.get(phase, phase)}", "", "| metric | " + " | ".join(shown) + " |",
             "|---|" + "---|" * len(shown)]
    for metric, per_target in metrics.items():
        arrow = "↑" if higher_is_better(metric) else "↓"
        lines.append(f"| {metric} {arrow} | " + " | ".join(_cell(per_target.get(n)) for n in shown) + " |")
    return [*lines, ""]


def _goals(summary: dict[str, Any], peer: str) -> list[str]:
    """The project's targets against one peer in the same run, each marked met or not."""

    def ratio(phase: str, metric: str) -> float | None:
        cell = summary.get(phase, {}).get(metric, {}).get(peer)
        return None if cell is None or "ratio" not in cell else 1 / cell["ratio"]

    rows = []
    checks = [
        ("C-STORE ingest (1 assoc) throughput ≥ 1.0×", "cstore_1", "mb_per_s", 1.0, True),
        ("C-STORE ingest (4 assoc) throughput ≥ 1.0×", "cstore_4", "mb_per_s", 1.0, True),
        ("STOW-RS ingest throughput ≥ 1.0×", "stow", "mb_per_s", 1.0, True),
        ("disk ≤ 0.25× (4× less)", "storage", "mb", 0.25, False),
        ("C-GET in the stored syntax time ≤ 1.0×", "cget_stored", "seconds", 1.0, False),
        ("frame p50 ≤ 1.0×", "frame_latency", "p50_ms", 1.0, False),
        ("series metadata ≤ 0.2×", "series_metadata", "ms", 0.2, False),
        ("QIDO studies ≤ 0.2×", "qido", "studies_ms", 0.2, False),
        ("QIDO series ≤ 0.2×", "qido", "series_ms", 0.2, False),
        ("QIDO instances ≤ 0.2×", "qido", "instances_ms", 0.2, False),
    ]
    for label, phase, metric, limit, higher in checks:
        r = ratio(phase, metric)
        if r is None:
            rows.append(f"| {label} | – | not measured |")
            continue
        shown = f"{r:.2f}× its throughput" if higher else f"{r:.2f}×"
        rows.append(f"| {label} | {shown} | {'met' if (r >= limit if higher else r <= limit) else '**not met**'} |")
    return [f"### pacs-engine against {peer} (pacs-engine's figure as a multiple of {peer}'s)", "",
            "| target | pacs-engine / peer | |", "|---|---|---|", *rows, ""]


def render_markdown(results: dict[str, Any], summary: dict[str, Any], plots: Sequence[str]) -> str:
    meta, workload = results["meta"], results["workload"]
    names = [t["name"] for t in results["targets"] if t["status"] != "skipped"]
    lines = [
        "# pacs-engine side-by-side benchmark", "",
        f"Run {meta['started']} for {meta['seconds']:.0f} s, {meta['repeats']} repetition(s)"
        f"{' (small mode: the figures mean nothing)' if meta['small'] else ''}. Machine: {meta['cpu']}, "
        f"{meta['cores']} cores, load average at start {' '.join(meta['load_average_at_start'])}. "
        f"pacs-engine {meta['pacs_engine']}, {meta['orthanc'] or 'Orthanc not installed'}, "
        f"{meta['dcmtk'] or 'DCMTK not installed'}, Python {meta['python']}.", "",
    ]
    if meta.get("note"):
        lines += [meta["note"], ""]
    lines += ["Each cell: median of the repetitions (min–max) and ×ratio to pacs-engine's median. "
              "↑ higher is better, ↓ lower is better. Ingest runs each start the target afresh with empty "
              "storage; `seconds` ends when every instance is queryable (a series QIDO counts them all; pacs-engine "
              "acknowledges once an instance is journalled, commits its query record right after and "
              "transcodes its pixels behind that, so its CPU figure includes the transcodes): `ack_seconds` "
              "is when the sender finished. "
              "The read phases run against the archive left by the last C-STORE run. The targets take turns: "
              "each repetition of a phase runs on every target before the next one starts, and every target "
              "stays up, idle, through the read phases, so a change in the shared host's speed falls on all "
              "of them (the host-speed table at the end shows how much it moved). Every timed transfer "
              "(C-STORE, STOW-RS, C-GET, C-MOVE) starts after a sync, so none pays for the write-back of the "
              "one before it. Every DCMTK process "
              "(storescu, getscu, movescu, storescp, Orthanc) runs with TCP_NODELAY=1. Orthanc runs with its "
              "defaults apart from storage, ports, AE titles and the DICOMweb plugin (so StorageAccessOnFind is "
              "Always and its DICOMweb metadata is read from the stored files).", "", "## Workload", "",
              "| series | instances | MB |", "|---|---|---|"]
    lines += [f"| {s['name']} | {s['instances']} | {s['mb']:.1f} |" for s in workload["series"]]
    lines += [f"| total | {workload['instances']} | {workload['mb']:.1f} |", "",
              f"Retrieve, first-image and metadata phases use the `{workload['main_series']}` series; the mixed "
              f"load stores a separate {workload['mixed_instances']}-slice CT study per repetition.", "",
              "## Targets", ""]
    for target in results["targets"]:
        status = {"ok": "ran", "skipped": "**skipped**", "crashed": "**crashed**"}.get(target["status"], target["status"])
        lines.append(f"- `{target['name']}`: {status}")
        lines += [f"  - {note.splitlines()[0][:300]}" for note in target["notes"]]
    lines += [""]
    # A peer that crashed before any phase finished has nothing to compare against.
    peers = [t["name"] for t in results["targets"] if t["name"].startswith("orthanc") and t["phases"]
             and any(entry["runs"] for entry in t["phases"].values())]
    if peers and REFERENCE in names:
        lines += ["## Project targets", ""]
        for peer in peers:
            lines += _goals(summary, peer)
    lines += ["## Results by phase", ""]
    for phase in PHASE_TITLES:
        if phase in summary:
            lines += _phase_table(phase, summary[phase], names)
            infos = {t["name"]: t["phases"][phase]["info"] for t in results["targets"]
                     if phase in t["phases"] and t["phases"][phase]["info"]}
            lines += [f"- {n}: " + "; ".join(f"{k} {v}" for k, v in info.items()) for n, info in infos.items()]
            lines += [""] if infos else []
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    return "\n".join(lines)


def write_report(results: dict[str, Any], out: Path) -> None:
    """results.json, plots (when matplotlib is installed) and report.md into `out`."""
    summary = summarise(results)
    results["summary"] = summary
    plots = write_plots(summary, [t["name"] for t in results["targets"] if t["status"] != "skipped"], out)
    (out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    text = render_markdown(results, summary, plots)
    if not plots:
        text += "\nNo plots: matplotlib is not installed (pip install 'pacs-engine[bench]').\n"
    (out / "report.md").write_text(text)


PLOTS = {
    "ingest": [("cstore_1", "mb_per_s"), ("cstore_4", "mb_per_s"), ("stow", "mb_per_s")],
    "storage": [("storage", "mb"), ("memory", "peak_rss_mb")],
    "retrieve": [("cget", "seconds"), ("cget_stored", "seconds"), ("cmove", "seconds"),
                 ("series_low_res", "seconds")],
    "frames": [("frame_latency", "p50_ms"), ("frame_latency", "p95_ms"), ("frame_latency", "p99_ms"),
               ("first_image", "ms")],
    "queries": [("series_metadata", "ms"), ("qido", "studies_ms"), ("qido", "series_ms"), ("qido", "instances_ms")],
    "mixed": [("mixed_load", "frames_per_s"), ("mixed_load", "p50_ms"), ("mixed_load", "p99_ms")],
}


def write_plots(summary: dict[str, Any], names: Sequence[str], out: Path) -> list[str]:
    """One small PNG per group of phases: grouped bars per target with min–max error bars. Returns file names."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        LOGGER.warning("matplotlib is not installed: no plots")
        return []
    written = []
    for group, panels in PLOTS.items():
        panels = [(p, m) for p, m in panels if m in summary.get(p, {})]
        if not panels:
            continue
        figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0), squeeze=False)
        for axis, (phase, metric) in zip(axes[0], panels, strict=True):
            cells = summary[phase][metric]
            shown = [n for n in names if n in cells]
            medians = [cells[n]["median"] for n in shown]
            low = [cells[n]["median"] - cells[n]["min"] for n in shown]
            high = [cells[n]["max"] - cells[n]["median"] for n in shown]
            colours = ["#1f77b4" if n.startswith("pacs-engine") else "#ff7f0e" if n.startswith("orthanc")
                       else "#7f7f7f" for n in shown]
            axis.bar(range(len(shown)), medians, yerr=[low, high], color=colours, capsize=3)
            axis.set_xticks(range(len(shown)), shown, rotation=35, ha="right", fontsize=7)
            axis.set_title(f"{phase}\n{metric} {'↑' if higher_is_better(metric) else '↓'}", fontsize=8)
            axis.tick_params(axis="y", labelsize=7)
        figure.tight_layout()
        name = f"{group}.png"
        figure.savefig(out / name, dpi=72)
        plt.close(figure)
        written.append(name)
    return written
