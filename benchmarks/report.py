"""Render benchmarks/results.json as benchmarks/RESULTS.md (figures, targets, met or not, and why).

``python benchmarks/report.py [results.json] [RESULTS.md]`` re-renders without running anything.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _met(flag: Any) -> str:
    return {True: "**met**", False: "**not met**", None: "n/a"}.get(flag, "n/a")


def _ms(s: float | None) -> str:
    return "n/a" if s is None else f"{s * 1000:.0f} ms"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.1f} %"


def _mib(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f} MiB"


def _failed(b: dict[str, Any]) -> str | None:
    if b.get("error"):
        return str(b["error"])
    return None


def _summary_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    b = r["benchmarks"]
    rows: list[tuple[str, str, str, str]] = []

    o = b.get("overhead", {})
    if _failed(o):
        rows.append(("Overhead (default model)", f"failed: {_failed(o)}", "<= 10 % (ORT)", _met(False)))
    elif o:
        rows.append(
            (
                "Overhead: everything but inference / model time (default model, replayed masks, "
                f"{o['masks_per_tile']['mean']:.0f} masks per tile)",
                _pct(o["overhead_share"]),
                "<= 10 % of ORT" if o.get("engine") == "onnxruntime" else "<= 5 %",
                _met(o["met"]),
            )
        )

    m = b.get("memory", {})
    if m and not _failed(m):
        ok = [x for x in m["rows"] if "summary" in x]
        if ok:
            rows.append(
                (
                    f"Throughput end to end, default model, {m.get('device', 'cpu')}, batch {m.get('batch_size', '?')} "
                    "(`fastsam-geo extract`, CLI defaults)",
                    "; ".join(
                        f"{x['size']} px: {x['megapixels_per_s']:.2f} Mpx/s, {x['tiles_per_s']:.2f} tiles/s" for x in ok
                    ),
                    "(recorded)",
                    "n/a",
                )
            )
            big = max(ok, key=lambda x: x["size"])
            first = min(ok, key=lambda x: x["size"])
            note = ""
            if first is not big and first["read_wait_share"] > 0.01:
                note = (
                    f"; {first['size']} px: {_pct(first['read_wait_share'])}, the wait for the first batch's tiles "
                    "before inference can start"
                )
            rows.append(
                (
                    "Model waiting for I/O: read_wait / run time",
                    f"{_pct(big['read_wait_share'])} ({big['size']} px){note}",
                    "prefetch: the model never waits (<= 1 % in steady state)",
                    _met(big["read_wait_share"] <= 0.01),
                )
            )

    t = b.get("throughput_300", {})
    if _failed(t):
        rows.append(
            ("End to end per tile, 300 objects / forward pass", f"failed: {_failed(t)}", "<= 1.5 x", _met(False))
        )
    elif t:
        rows.append(
            (
                f"End to end per tile with 300 objects / forward pass alone (FastSAM-s arch., 1024 px, CPU, "
                f"batch {t['batch_size']})",
                f"{t['end_to_end_over_forward']:.2f} x ({t['end_to_end_s_per_tile']['median']:.2f} s vs "
                f"{t['forward_reference_s']:.2f} s; "
                + (
                    f"at batch {t['other_batch_size']}: {t['end_to_end_other_batch_over_forward']:.2f} x; "
                    if "end_to_end_other_batch_over_forward" in t
                    else ""
                )
                + f"naive ultralytics retina loop {t['naive_retina_s_per_tile']['median']:.2f} s = "
                f"{t['naive_over_forward']:.1f} x)",
                "<= 1.5 x",
                _met(t["met"]),
            )
        )

    g = b.get("merge_scaling", {})
    if _failed(g):
        rows.append(("Merge scaling", f"failed: {_failed(g)}", "N log N; 10^6 < 60 s", _met(False)))
    elif g:
        rows.append(
            (
                "Merge: time exponent over 10^4..10^6 polygons",
                f"N^{g['exponent']:.2f} (N log N is N^{g['nlogn_exponent']:.2f} here)",
                "N log N or better",
                _met(g["met_scaling"]),
            )
        )
        last = g["rows"][-1]
        rows.append(
            (
                f"Merge: {last['polygons_in']:,} polygons",
                f"{last['merge_seconds']:.1f} s",
                "< 60 s for 10^6",
                _met(g["met_1e6"]),
            )
        )

    p = b.get("reprompt", {})
    if _failed(p):
        rows.append(("Re-prompt latency", f"failed: {_failed(p)}", "< 50 ms", _met(False)))
    elif p:
        rows.append(
            (
                "Re-prompt from the cache: point (median)",
                _ms(p["point_seconds"]["median"]),
                "< 50 ms",
                _met(p["met_point"]),
            )
        )
        rows.append(
            ("Re-prompt from the cache: box (median)", _ms(p["box_seconds"]["median"]), "< 50 ms", _met(p["met_box"]))
        )
        rows.append(
            (
                f"Re-prompt from the cache: text over {p['tiles']} tiles (CLIP's share of the time)",
                f"{p['text_seconds']:.1f} s, CLIP {_pct(p['text_clip_share'])}",
                "limited by CLIP alone (>= 90 %)",
                _met(p["met_text"]),
            )
        )

    if m and not _failed(m):
        ok = [x for x in m["rows"] if "summary" in x]
        first, last = m["rows"][0], m["rows"][-1]
        rows.append(
            (
                f"Peak RSS of `fastsam-geo extract`, {last['size']} px vs {first['size']} px",
                (
                    f"{_mib(last['peak_rss_mib'])} vs {_mib(first['peak_rss_mib'])} "
                    f"({m.get('peak_rss_ratio_largest_to_smallest', float('nan')):.2f} x)"
                )
                if len(ok) == len(m["rows"])
                else "a run failed",
                "<= 1.3 x",
                _met(m["met"]),
            )
        )
    elif _failed(m):
        rows.append(("Peak RSS vs raster size", f"failed: {_failed(m)}", "<= 1.3 x", _met(False)))

    peer = b.get("peer", {})
    if peer and m and not _failed(m):
        for size in sorted({x["size"] for x in peer.get("rows", [])}):
            ours = next((x for x in m["rows"] if x["size"] == size and "summary" in x), None)
            theirs = next((x for x in peer["rows"] if x["size"] == size and not x["retina_masks"]), None)
            if ours and theirs:
                if "scores" in theirs:
                    val = (
                        f"time {theirs['wall_s'] / ours['wall_s']:.2f} x ours; F1 {theirs['scores']['f1']:.3f} "
                        f"vs ours {ours['scores']['f1']:.3f}"
                    )
                else:
                    val = f"peer failed ({theirs.get('failed')}); ours F1 {ours['scores']['f1']:.3f}"
                rows.append((f"Peer samgeo FastSAM vs fastsam-geo, {size} px", val, "(side by side)", "n/a"))
    elif peer.get("failed"):
        rows.append(("Peer samgeo FastSAM", f"not run: {peer['failed']}", "(side by side)", "n/a"))

    gpu = b.get("gpu", {})
    if gpu:
        if gpu.get("available"):
            best = gpu["best"]
            rows.append(
                (
                    f"GPU {gpu['gpu']}: FastSAM-s arch. 1024 px, batch {best['batch']}, "
                    f"{'half' if best['half'] else 'float32'}",
                    f"{best['segment_tiles_per_s']:.1f} tiles/s (forward alone {best['forward_tiles_per_s']:.1f})",
                    "(recorded)",
                    "n/a",
                )
            )
        else:
            rows.append(("GPU", "no NVIDIA GPU on this machine: not measured", "(recorded where one exists)", "n/a"))
    for m in b.get("onnx", {}).get("models", []):
        t, o = m["torch"], m["onnxruntime"]
        rows.append(
            (
                f"ONNX Runtime vs torch, CPU, {m['model']}, end to end per 1024 px tile",
                f"{m['speedup_end_to_end']:.2f} x ({o['end_to_end_s']['median']:.3f} s vs "
                f"{t['end_to_end_s']['median']:.3f} s; forward {m['speedup_forward']:.2f} x)",
                ">= 1.5 x",
                _met(m["speedup_end_to_end"] >= 1.5),
            )
        )
    inst = b.get("install", {})
    if inst.get("light"):
        lt, tt = inst["light"], inst.get("torch", {})
        full = f"; with torch {tt['mib']:,.0f} MiB in {tt['seconds']:.0f} s" if "mib" in tt else ""
        rows.append(
            (
                "Light install (no torch) from an empty venv: size on disk, install time",
                f"{lt['mib']:,.0f} MiB in {lt['seconds']:.0f} s{full}",
                "< 400 MB",
                _met(lt["mib"] * 2**20 / 1e6 < 400 and not lt["torch_importable"]),
            )
        )
    total = r.get("total_seconds")
    if total is not None:
        rows.append(("`make bench` wall time on this machine", f"{total / 60:.1f} min", "< 30 min", _met(total < 1800)))
    return rows


def _table(header: list[str], rows: list[list[str]] | list[tuple[str, ...]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _stages(st: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in st.items())


def render(r: dict[str, Any]) -> str:
    mach = r["machine"]
    b = r["benchmarks"]
    L: list[str] = []
    L.append("# Benchmarks")
    L.append("")
    L.append(
        "Written by `make bench` (`benchmarks/run.py`); do not edit by hand. Every figure below comes from the "
        "run described here; `benchmarks/results.json` holds the same figures and more, machine-readably."
    )
    L.append("")
    L.append(
        _table(
            ["", ""],
            [
                ["Date", r["date"]],
                ["Command", f"`{r['command']}`"],
                ["Total time", f"{r['total_seconds'] / 60:.1f} min" if r.get("total_seconds") is not None else "n/a"],
                [
                    "Machine",
                    f"{mach['cpu']}, {mach['logical_cores']} logical cores, {mach['memory_gib']} GiB RAM, {mach['os']}",
                ],
                [
                    "Load average at start",
                    ", ".join(str(x) for x in mach["load_average_at_start"])
                    + " (the machine may be shared: compare ratios measured in one run)",
                ],
                ["GPU", r.get("gpu") or "none"],
                ["Python", mach["python"]],
                ["Versions", ", ".join(f"{k} {v}" for k, v in mach["versions"].items())],
                ["Code", f"git {mach['git_commit']}"],
                ["Default model", r.get("default_model") or "missing"],
            ],
        )
    )
    L.append("")
    L.append("## Summary")
    L.append("")
    L.append(_table(["Figure", "Measured", "Target", "Met"], _summary_rows(r)))
    L.append("")
    L.append(
        "Timings are medians of repeated runs unless a section says otherwise; single runs are marked. "
        "`Mpx` = 10^6 pixels."
    )
    why = _why_not(r)
    if why:
        L.append("")
        L.append("### What is not met, and why")
        L.append("")
        L.extend(f"- {w}" for w in why)

    o = b.get("overhead")
    L += ["", "## Overhead: everything but inference, as a share of the model's time", ""]
    if o and not _failed(o):
        L.append(
            f"Model: `{o['model']}` (sha256 `{o['weights_sha256'][:12]}`), engine {o.get('engine', 'torch')}, "
            f"device {o['device']}, batch {o['batch_size']}, "
            f"{o['torch_threads']} threads, conf {o['conf']}. Raster: {o['raster']}, {o['tiles']} tiles. "
            f"The model's everything masks per tile: mean {o['masks_per_tile']['mean']}, "
            f"min {o['masks_per_tile']['min']}, max {o['masks_per_tile']['max']}."
        )
        L.append("")
        L.append(
            _table(
                ["", "seconds"],
                [
                    [
                        "Model (the `segment` stage: forward, NMS, mask assembly), median of "
                        f"{len(o['model_seconds']['runs'])} runs",
                        f"{o['model_seconds']['median']:.3f} ({o['model_seconds_per_tile']:.3f} per tile)",
                    ],
                    ["Same run, whole `extract_buildings` call", f"{o['model_run_total_seconds']['median']:.3f}"],
                    [
                        f"Replay (recorded masks, no model): whole call, median of {len(o['replay_seconds']['runs'])}",
                        f"{o['replay_seconds']['median']:.3f} (CPU {o['replay_cpu_seconds']['median']:.3f})",
                    ],
                    ["Replay stages (fastest run)", _stages(o["replay_stages"])],
                    ["Writing the tiles' masks to the mask cache (CLI default)", f"{o['cache_write_seconds']:.3f}"],
                ],
            )
        )
        L.append("")
        L.append(
            f"Overhead = replay time / model time = **{_pct(o['overhead_share'])}** "
            f"({_pct(o['overhead_share_with_cache'])} with the cache writes). "
            f"Wall time the real run spends outside the model: {_pct(o['added_wall_share'])} of the model's time "
            "(reading overlaps inference in the prefetch thread)."
        )
    elif o:
        L.append(f"Failed: {_failed(o)}")

    t = b.get("throughput_300")
    L += ["", "## Throughput with 300 objects per tile: forward pass vs end to end vs a naive loop", ""]
    if t and not _failed(t):
        L.append(
            f"Model: {t['model']}; {t['input_px']} px input, device {t['device']}, {t['torch_threads']} torch threads, "
            f"conf {t['conf']}, max_det {t['max_det']}. Raster: {t['raster']}. Random weights give few non-empty "
            "masks, so fastsam-geo's run gets 300 realistic objects per tile (the scene's true buildings, then trees): "
            "the forward pass and NMS run for real, 300 detections with those objects' boxes are assembled on the "
            "network's own prototypes (the real cost of building 300 masks), and select / vectorize / merge / write "
            f"process the 300 true masks (non-empty assembled masks per tile: {t['masks_assembled_per_tile']})."
        )
        L.append("")
        L.append(
            _table(
                ["", "s per tile", "x forward"],
                [
                    [
                        "(a) forward pass alone, batch 1",
                        f"{t['forward_s_per_tile_batch1']['median']:.3f}",
                        f"{t['forward_s_per_tile_batch1']['median'] / t['forward_reference_s']:.2f}",
                    ],
                    [
                        "(a) forward pass alone, batch 4",
                        f"{t['forward_s_per_tile_batch4']['median']:.3f}",
                        f"{t['forward_s_per_tile_batch4']['median'] / t['forward_reference_s']:.2f}",
                    ],
                    [
                        f"(b) fastsam-geo `extract_buildings` end to end (batch {t['batch_size']})",
                        f"{t['end_to_end_s_per_tile']['median']:.3f}",
                        f"{t['end_to_end_over_forward']:.2f}",
                    ],
                    [
                        f"(b') the same at batch {t.get('other_batch_size', '?')}",
                        f"{t['end_to_end_other_batch_s_per_tile']['median']:.3f}"
                        if "end_to_end_other_batch_s_per_tile" in t
                        else "n/a",
                        f"{t.get('end_to_end_other_batch_over_forward', float('nan')):.2f}",
                    ],
                    [
                        f"(c) naive loop: `ultralytics.FastSAM.predict(retina_masks=True)`, prediction only "
                        f"({len(t['naive_retina_s_per_tile']['runs'])} tiles, one run each)",
                        f"{t['naive_retina_s_per_tile']['median']:.3f}",
                        f"{t['naive_over_forward']:.2f}",
                    ],
                ],
            )
        )
        L.append("")
        L.append(
            f"The ratio is taken against the faster forward figure ({t['forward_reference_s']:.3f} s). "
            f"End-to-end stages (fastest run, seconds for 4 tiles): {_stages(t['end_to_end_stages'])}. "
            f"ultralytics returned {t['naive_masks_per_tile']} non-empty masks per tile after building "
            f"{t['max_det']} full-resolution ones."
        )
    elif t:
        L.append(f"Failed: {_failed(t)}")

    m = b.get("memory")
    L += ["", "## Throughput and memory of `fastsam-geo extract` against raster size (default model, CPU)", ""]
    if m and not _failed(m):
        L.append(
            f"One process per raster: `{m['command']}`. Peak RSS: the kernel's high-water mark of the process "
            "(`os.wait4` ru_maxrss); psutil polling of the process tree every 50 ms agrees within noise. "
            "Mpx/s and tiles/s use the extraction's own time (its `--json` summary `seconds`: the whole "
            "`extract_buildings` call, loading the model included, Python's start and imports not); wall time is "
            "the whole process."
        )
        L.append("")
        rows = []
        for x in m["rows"]:
            if "summary" in x:
                s = x["summary"]
                sc = x["scores"]
                seam = "n/a" if sc["seam_score"] is None else f"{sc['seam_score']:.3f}"
                rows.append(
                    [
                        f"{x['size']} px ({x['megapixels']} Mpx)",
                        s["tiles_processed"],
                        f"{x['wall_s']:.1f}",
                        f"{s['seconds']:.1f}",
                        f"{x['megapixels_per_s']:.3f}",
                        f"{x['tiles_per_s']:.3f}",
                        _pct(x["read_wait_share"]),
                        _mib(x["peak_rss_mib"]),
                        f"{sc['f1']:.3f}",
                        seam,
                    ]
                )
            else:
                rows.append(
                    [
                        f"{x['size']} px",
                        "",
                        f"{x['wall_s']:.1f}",
                        "",
                        "",
                        "",
                        "",
                        _mib(x["peak_rss_mib"]),
                        f"failed: {x.get('killed') or x['stderr_tail'][-200:]}",
                        "",
                    ]
                )
        L.append(
            _table(
                [
                    "Raster",
                    "tiles",
                    "wall s",
                    "extract s",
                    "Mpx/s",
                    "tiles/s",
                    "read wait",
                    "peak RSS",
                    "F1",
                    "seam score",
                ],
                rows,
            )
        )
        ok = [x for x in m["rows"] if "summary" in x]
        if ok:
            L.append("")
            st = ok[-1]["summary"]["stage_seconds"]
            other = ok[-1]["summary"]["seconds"] - sum(st.values())
            L.append(
                "Stages of the largest run (seconds): "
                + _stages(st)
                + f"; outside the stages (loading the model, the resume ledger, committing the GeoPackage): {other:.3f}"
            )
        d = m.get("diagnosis_gdal_cachemax_64")
        if d and ok:
            L.append("")
            L.append(
                f"Diagnosis: the {d['size']} px run again with GDAL's block cache capped at 64 MB "
                f"(`GDAL_CACHEMAX=64`; GDAL's default is 5 % of RAM): peak RSS {_mib(d['peak_rss_mib'])} "
                f"({d['peak_rss_mib'] / ok[0]['peak_rss_mib']:.2f} x the {ok[0]['size']} px run)"
                + (
                    f", {d['megapixels_per_s']:.3f} Mpx/s."
                    if "megapixels_per_s" in d
                    else f"; failed: {d.get('killed')}."
                )
            )
    elif m:
        L.append(f"Failed: {_failed(m)}")

    g = b.get("merge_scaling")
    L += ["", "## Merge scaling", ""]
    if g and not _failed(g):
        L.append(
            f"`TileMerger` alone (generation not timed), tiles fed in row-major order as the pipeline does. "
            f"Buildings: {g['templates']} traced outlines of synthetic footprints "
            f"({g['vertices_per_template_mean']} vertices on average), about {g['pieces_per_interior_tile']} pieces "
            "per interior tile; a few large ones wider than the overlap must be joined across seams. One run per size."
        )
        L.append("")
        L.append(
            _table(
                [
                    "polygons in",
                    "tiles",
                    "objects out",
                    "true objects",
                    "seam-merged",
                    "pairs tested",
                    "seconds",
                    "µs / polygon",
                ],
                [
                    [
                        f"{x['polygons_in']:,}",
                        x["tiles"],
                        f"{x['objects_out']:,}",
                        f"{x['true_objects']:,}",
                        x["seam_merged"],
                        f"{x['pairs_tested']:,}",
                        f"{x['merge_seconds']:.2f}",
                        x["us_per_polygon"],
                    ]
                    for x in g["rows"]
                ],
            )
        )
        L.append("")
        L.append(
            f"Fitted exponent (least squares on log-log): **N^{g['exponent']:.3f}**; between consecutive sizes: "
            f"{', '.join(f'N^{e:.3f}' for e in g['pairwise_exponents'])}. N log N over the same range is "
            f"N^{g['nlogn_exponent']:.3f}."
        )
    elif g:
        L.append(f"Failed: {_failed(g)}")

    p = b.get("reprompt")
    L += ["", "## Re-prompt latency from the everything-mask cache", ""]
    if p and not _failed(p):
        L.append(
            f"Model `{p['model']}`; raster: {p['raster']}, {p['tiles']} tiles; the cache was filled by one "
            f"`extract_buildings(cache_dir=...)` run ({p['fill_seconds']:.1f} s). Each point or box prompt is on a "
            "different true building; each latency is one whole `extract_buildings(..., cache_only=True)` call "
            "(read cached masks, select, vectorize, merge, write a GeoPackage), after one warm-up call."
        )
        L.append("")
        L.append(
            _table(
                ["Prompt", "median", "min", "max", "buildings returned", "stages of the median run (s)"],
                [
                    [
                        "point",
                        _ms(p["point_seconds"]["median"]),
                        _ms(p["point_seconds"]["min"]),
                        _ms(p["point_seconds"]["max"]),
                        p["point_buildings_returned"],
                        _stages(p["point_stages_median_run"]),
                    ],
                    [
                        "box",
                        _ms(p["box_seconds"]["median"]),
                        _ms(p["box_seconds"]["min"]),
                        _ms(p["box_seconds"]["max"]),
                        p["box_buildings_returned"],
                        _stages(p["box_stages_median_run"]),
                    ],
                ],
            )
        )
        L.append("")
        L.append(
            f'Text ("a building", {p["clip_model"]}, scorer loaded beforehand, one run): {p["text_seconds"]:.2f} s '
            f"in all, of which CLIP {p['text_clip_seconds']:.2f} s ({_pct(p['text_clip_share'])}) over "
            f"{p['text_masks_scored']} masks ({p['text_clip_ms_per_mask']:.1f} ms per mask); everything else "
            f"{p['text_other_seconds']:.2f} s."
        )
    elif p:
        L.append(f"Failed: {_failed(p)}")

    peer = b.get("peer")
    L += ["", "## Peer: segment-geospatial's FastSAM, side by side", ""]
    if peer:
        env = peer.get("environment", {})
        if env.get("installed"):
            vers = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
            L.append(
                f"{peer['tool']} in `{env['venv']}` ({vers}"
                + (f"; installed in this run in {env['install_seconds']:.0f} s" if env.get("install_seconds") else "")
                + f"). Same weights (`{peer.get('model')}`, rebuilt with ultralytics 8.0 classes, same tensors); "
                f"{peer.get('settings', '')}. samgeo runs the model once on the whole raster resized to 1024 px "
                "and merges all masks into one binary raster before vectorizing; `retina_masks=True` makes its masks "
                "full-resolution. Both tools are scored the same way against the truth (seam score over "
                "fastsam-geo's 1024/128 tile seams)."
            )
        if peer.get("failed"):
            L.append("")
            L.append(f"Not run: {peer['failed']}")
            if env.get("log_tail"):
                L.append("")
                L.append("```")
                L.extend(env["log_tail"])
                L.append("```")
        rows = []
        for x in peer.get("rows", []):
            ours = next((o for o in (m or {}).get("rows", []) if o["size"] == x["size"] and "summary" in o), None)
            if ours and x is peer["rows"][[y["size"] for y in peer["rows"]].index(x["size"])]:
                sc = ours["scores"]
                rows.append(
                    [
                        f"{x['size']} px",
                        "fastsam-geo extract (tiles 1024/128)",
                        f"{ours['wall_s']:.1f}",
                        _mib(ours["peak_rss_mib"]),
                        f"{sc['f1']:.3f}",
                        "n/a" if sc["seam_score"] is None else f"{sc['seam_score']:.3f}",
                        "1.00",
                    ]
                )
            name = f"samgeo FastSAM{' retina_masks=True' if x['retina_masks'] else ''}"
            if "scores" in x:
                sc = x["scores"]
                ratio = f"{x['wall_s'] / ours['wall_s']:.2f}" if ours else "n/a"
                rows.append(
                    [
                        f"{x['size']} px",
                        name,
                        f"{x['wall_s']:.1f}",
                        _mib(x["peak_rss_mib"]),
                        f"{sc['f1']:.3f}",
                        "n/a" if sc["seam_score"] is None else f"{sc['seam_score']:.3f}",
                        ratio,
                    ]
                )
            else:
                rows.append(
                    [
                        f"{x['size']} px",
                        name,
                        f"{x['wall_s']:.1f}",
                        _mib(x["peak_rss_mib"]),
                        f"failed: {x.get('failed')}",
                        "",
                        "",
                    ]
                )
        if rows:
            L.append("")
            L.append(_table(["Raster", "Tool", "wall s", "peak RSS", "F1", "seam score", "time / ours"], rows))
            L.append("")
            L.append("Wall times are whole processes (Python start and model load included for both); one run each.")

    gpu = b.get("gpu")
    L += ["", "## GPU", ""]
    if gpu and gpu.get("available"):
        L.append(
            f"{gpu['gpu']} ({gpu['gpu_memory_gib']} GiB), torch {gpu['torch']} (CUDA {gpu['torch_cuda']}); "
            "FastSAM-s architecture, 1024 px, 300 detections per tile."
        )
        L.append("")
        L.append(
            _table(
                ["precision", "batch", "forward tiles/s", "segment() tiles/s", "masks per tile"],
                [
                    [
                        "half" if x["half"] else "float32",
                        x["batch"],
                        x["forward_tiles_per_s"],
                        x["segment_tiles_per_s"],
                        x["masks_per_tile"],
                    ]
                    for x in gpu["rows"]
                ],
            )
        )
        e = gpu["end_to_end"]
        L.append("")
        L.append(
            f"End to end with the best setting over {e['tiles']} tiles: {e['tiles_per_s']} tiles/s, "
            f"{e['megapixels_per_s']} Mpx/s (stages: {_stages(e['stage_seconds'])})."
        )
    elif gpu:
        L.append(f"Not measured: {gpu.get('note') or _failed(gpu)}.")
    L += _onnx_section(b.get("onnx"))
    L += _tta_section(b.get("tta"))
    L += _refine_section(b.get("refine"))
    L += _install_section(b.get("install"))
    L += _dask_section(b.get("dask"))
    L.append("")
    L.append("## Run log")
    L.append("")
    L.append(
        _table(
            ["Benchmark", "seconds", "load average before (1, 5, 15 min)", "after"],
            [
                [
                    name,
                    f"{x.get('bench_seconds', 0):.0f}",
                    ", ".join(str(v) for v in x.get("load_average_before", [])),
                    ", ".join(str(v) for v in x.get("load_average_after", [])),
                ]
                for name, x in b.items()
            ],
        )
    )
    L.append("")
    L.append(
        "A load average above about 2 on this 2-core machine means other processes were running too: the "
        "timings of that benchmark are slower than the machine can do; its ratios are measured within it."
    )
    L.append("")
    L.append("## How to repeat")
    L.append("")
    L.append(
        f"`make bench` ({r['total_seconds'] / 60:.0f} min in the run above"
        if r.get("total_seconds")
        else "`make bench` ("
    )
    L[-1] += (
        "; a first run also creates `.venv-peer`, about 2 min). "
        "`.venv/bin/python benchmarks/run.py --only overhead,merge` runs a subset; `--quick` is a smoke run whose "
        "figures mean nothing; `--data-dir DIR` keeps the synthetic rasters between runs. "
        "`benchmarks/bench_masks.py` is a separate by-hand timing of mask assembly."
    )
    L.append("")
    return "\n".join(L)


def _dask_section(d: dict[str, Any] | None) -> list[str]:
    """Dask: 1 vs 2 worker processes here, and the paper estimate for 10^5 sheets."""
    L = ["", "## Dask: worker processes, and 10^5 sheets on paper", ""]
    if not d:
        return [*L, "Not run yet (`benchmarks/run.py --only dask`)."]
    if _failed(d):
        return [*L, f"Failed: {_failed(d)}"]
    if "runs" not in d:  # a result of the older benchmark (one process against 1 and 2 workers)
        return [*L, "Measured by an older version of the benchmark; run `benchmarks/run.py --only dask` again."]
    labels = {
        "plain": "plain (one process, engine auto)",
        "plain_1core": "plain, pinned to one core (`taskset -c 0`)",
        "workers_1": "`--workers 1`",
        "workers_2": "`--workers 2`",
        "workers_1_1core": "`--workers 1`, the cluster pinned to one core (`taskset -c 0`)",
        "torch": "plain, `--engine torch`",
    }
    L.append(
        f"{d['raster']}: {d['tiles']} tiles, {d['cores']} cores, {d['rounds']} round(s) interleaving the "
        "configurations; wall time of the whole command (a Dask run includes starting the LocalCluster and "
        "loading the model on each worker). Load average (1 min) before -> after each run. Outputs of "
        f"`--workers 1` / `--workers 2` equal to the plain run's (ids included): {d['outputs_equal']}."
    )
    L.append("")
    rows = [
        [
            labels.get(n, n),
            f"{d['median_s'][n]:.1f}",
            ", ".join(f"{r['wall_s']:.1f} (load {r['load_before']} -> {r['load_after']})" for r in rs),
            str(rs[-1]["engine"]),
            str(rs[-1]["buildings"]),
        ]
        for n, rs in d["runs"].items()
    ]
    L.append(_table(["configuration", "median s", "runs", "engine", "buildings"], rows))
    L.append("")
    L.append(
        f"`--workers 2` against `--workers 1`: **{d['speedup_2_vs_1_workers']}x** (target >= 1.8x); "
        + (
            f"`--workers 1` / plain on one core: **{d['workers_1_vs_plain_1core']}** (target <= 1.10); "
            if d.get("workers_1_vs_plain_1core") is not None
            else ""
        )
        + f"torch / ONNX Runtime, plain: **{d['torch_vs_onnx_plain']}x**."
    )
    if d.get("speedup_2_workers_vs_1_worker_on_1_core") is not None:
        L.append("")
        L.append(
            "Each worker process runs cores // worker processes intra-op threads, so `--workers 1` already "
            "has both cores: `--workers 2 / --workers 1` cannot exceed 2 x plain / plain on one core = "
            f"**{d['speedup_2_vs_1_workers_bound']}x** here. A second core with a second worker (`--workers 2` "
            f"against `--workers 1` pinned to one core): **{d['speedup_2_workers_vs_1_worker_on_1_core']}x**; "
            f"`--workers 1` / plain, both on one core: **{d['workers_1_1core_vs_plain_1core']}** (the cost of the "
            "cluster)."
        )
    s, e = d["serial"], d["estimate"]
    L.append("")
    L.append(
        "Measured in one process (a 1024 px town at tile 256): tile work "
        f"{s['tile_seconds']['median']:.3f} s per 256 px tile (of which read + select + vectorize "
        f"{s['tile_post_model_seconds']['median']:.4f} s), a pickled tile result "
        f"{s['tile_result_bytes']['median']:.0f} bytes ({s['polygons_per_tile']} polygons), and the serial part "
        f"(merge + write + ledger, `RunSink`) {s['sink_polygons_per_s']['median']:.0f} polygons/s"
        + (
            f"; the merge alone (Merge scaling above) {e['merge_only_polygons_per_s']:,} polygons/s."
            if e.get("merge_only_polygons_per_s")
            else "."
        )
    )
    L.append("")
    polys = e["tiles"] * e["polygons_per_1024_tile"]
    per_worker = e["polygons_per_1024_tile"] / e["worker_tile_s"]  # polygons/s one worker sends
    merge = e.get("merge_only_polygons_per_s")
    L.append(
        f"**On paper, 10^5 sheets of 5000 x 5000 px (1 km at 0.2 m) on 100 GPU workers**, as one mosaic at tile "
        f"1024 / overlap 128: {e['tiles']:,} tiles. Assuming {e['gpu_forward_s_assumed']} s of GPU forward per "
        f"tile (not measured here: no GPU) plus the measured CPU part, a worker needs {e['worker_tile_s']} s a tile: "
        f"tile work is {e['tile_work_hours_on_100']} h on 100 workers. At the measured density, a 1024 px tile "
        f"gives about {e['polygons_per_1024_tile']} polygons ({polys:,.0f} in all) and "
        f"{e['result_bytes_per_1024_tile']:,} bytes of results, so 100 workers send "
        f"{e['result_bytes_per_1024_tile'] * 100 / e['worker_tile_s'] / 1e6:.0f} MB/s (most of a 1 Gbit/s link) and "
        f"{e['polygons_arriving_per_s']:,} polygons/s to the client."
    )
    L.append("")
    if merge:
        L.append(
            f"The serial part is the client's merge + write. The merge alone runs {merge:,} polygons/s (10^6 "
            f"polygons, Merge scaling above): all {polys:,.0f} polygons take {polys / merge / 3600:.1f} h, and it "
            f"keeps up with about {merge / per_worker:.0f} workers; beyond that, more workers do not shorten the "
            "run unless the merge is split (one merger per block of sheets, blocks joined along their edges). "
            f"The `RunSink` figure above ({e['sink_polygons_per_s']:,} polygons/s) is a lower bound: with "
            f"{s['polygons_per_tile']} polygons per tile over {d['tiles']} tiles it is dominated by the fixed cost "
            "of opening the ledger and committing the GeoPackage, not by the per-polygon work (on a machine with "
            "a load average of 4-8)."
        )
    return L


def _why_not(r: dict[str, Any]) -> list[str]:
    """One line per target that is not met, from the measured figures."""
    b = r["benchmarks"]
    out = []
    for name, res in b.items():
        if _failed(res):
            out.append(f"{name}: the benchmark failed ({_failed(res)}); see results.json for its stderr.")
    o = b.get("overhead", {})
    if o.get("met") is False and not _failed(o):
        st = o["replay_stages"]
        parts = sorted(((v, k) for k, v in st.items() if k != "segment"), reverse=True)
        other = o["replay_seconds"]["min"] - sum(st.values())
        n_masks = o["masks_per_tile"]["mean"] * o["tiles"]
        out.append(
            f"Overhead {_pct(o['overhead_share'])} > {o.get('target', '5 %').split()[1]} %: the default model is small "
            f"({o['model_seconds_per_tile']:.2f} s per tile), and without it the run spends (fastest replay, "
            f"{o['replay_seconds']['min']:.2f} s): "
            + ", ".join(f"{k} {v:.2f} s" for v, k in parts)
            + f", outside the stages {other:.2f} s (resume ledger, GeoPackage commit). `vectorize` turns "
            f"{n_masks:.0f} masks into polygons ({1e6 * st.get('vectorize', 0) / max(n_masks, 1):.0f} µs per mask, "
            "simplification included)."
        )
    t = b.get("throughput_300", {})
    if t.get("met") is False and not _failed(t):
        b1, b4 = t["forward_s_per_tile_batch1"]["median"], t["forward_s_per_tile_batch4"]["median"]
        st = t["end_to_end_stages"]
        line = (
            f"End to end with 300 objects is {t['end_to_end_over_forward']:.2f} x the forward pass: stages for 4 tiles "
            f"{_stages(st)} (`segment` = forward at batch {t['batch_size']}, NMS, assembly of 300 masks: "
            f"{st.get('segment', 0) / 4 - t['forward_reference_s']:.3f} s per tile over the forward pass; `vectorize` "
            f"{st.get('vectorize', 0) / 4:.3f} s per tile). The forward pass alone costs {b1:.3f} s per tile at "
            f"batch 1 and {b4:.3f} s at batch 4"
        )
        if "end_to_end_other_batch_over_forward" in t:
            line += f" (end to end at batch {t['other_batch_size']}: {t['end_to_end_other_batch_over_forward']:.2f} x)"
        line += "."
        out.append(line)
    g = b.get("merge_scaling", {})
    if g.get("met_scaling") is False and not _failed(g):
        out.append(
            f"Merge time grows as N^{g['exponent']:.2f}, faster than N log N (N^{g['nlogn_exponent']:.2f}); "
            "µs per polygon: " + ", ".join(str(x["us_per_polygon"]) for x in g["rows"]) + "."
        )
    if g.get("met_1e6") is False and not _failed(g) and g.get("rows"):
        out.append(
            f"Merging {g['rows'][-1]['polygons_in']:,} polygons took {g['rows'][-1]['merge_seconds']:.1f} s "
            f"(µs per polygon: {', '.join(str(x['us_per_polygon']) for x in g['rows'])} for the three sizes: the "
            "growth is close to linear, the constant is too high for this target on this machine)."
        )
    p = b.get("reprompt", {})
    if p and not _failed(p):
        for kind in ("point", "box"):
            if p.get(f"met_{kind}") is False:
                st = p[f"{kind}_stages_median_run"]
                inside = sum(st.values())
                med = p[f"{kind}_seconds"]["median"]
                out.append(
                    f"A {kind} prompt takes {_ms(med)} (> 50 ms): the stages (reading the tiles' pixels, the cache, "
                    f"selection, vectorizing, merging, writing) add up to {_ms(inside)}; the other "
                    f"{_ms(med - inside)} are the call's fixed costs (finding and hashing the weights, opening the "
                    "raster, creating the resume ledger and the GeoPackage, its metadata tables)."
                )
        if p.get("met_text") is False:
            out.append(f"Text: CLIP takes only {_pct(p['text_clip_share'])} of the text prompt's time.")
    m = b.get("memory", {})
    if m.get("met") is False and not _failed(m):
        line = (
            "Peak RSS grows with raster size: "
            + ", ".join(f"{x['size']} px {_mib(x['peak_rss_mib'])}" for x in m["rows"])
            + "."
        )
        d = m.get("diagnosis_gdal_cachemax_64")
        if d and d.get("returncode") == 0 and m["rows"][0].get("peak_rss_mib"):
            ratio = d["peak_rss_mib"] / m["rows"][0]["peak_rss_mib"]
            line += (
                f" With GDAL's block cache capped at 64 MB the {d['size']} px run peaks at {_mib(d['peak_rss_mib'])} "
                f"({ratio:.2f} x): the growth is GDAL's raster block cache (default 5 % of RAM), which keeps the "
                "decoded blocks of every window read, unless the reader bounds it."
            )
        out.append(line)
    total = r.get("total_seconds")
    if total is not None and total >= 1800:
        out.append(f"`make bench` took {total / 60:.1f} min on this machine.")
    return out


def main() -> None:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results.json"
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else HERE / "RESULTS.md"
    dst.write_text(render(json.loads(src.read_text())))
    print(dst)


if __name__ == "__main__":
    main()


def _onnx_section(x: dict[str, Any] | None) -> list[str]:
    """torch vs ONNX Runtime, side by side (benchmarks/bench_onnx.py)."""
    if not x:
        return []
    L = ["", "## torch vs ONNX Runtime", ""]
    if _failed(x):
        return [*L, f"Failed: {_failed(x)}."]
    L.append(
        f"onnxruntime {x['onnxruntime']}, torch {x['torch']} ({x['threads']} threads); 1024 px tile, the .pt "
        f"exported by `fastsam-geo export` (fixed 1024 px, batch 1, float32); median of {x['runs']}, engines "
        "interleaved. End to end = `extract_buildings` on a one-tile raster (read, forward, NMS, masks, polygons, "
        "GeoPackage)."
    )
    L.append("")
    rows = []
    for m in x["models"]:
        for k in ("torch", "onnxruntime"):
            e = m[k]
            rows.append(
                [
                    m["model"],
                    k,
                    f"{e['forward_s']['median']:.3f}",
                    f"{e['end_to_end_s']['median']:.3f}",
                    e["masks_per_tile"],
                    f"{m['speedup_forward']:.2f} x / {m['speedup_end_to_end']:.2f} x" if k == "onnxruntime" else "",
                    ("yes" if m["agreement"]["ok"] else "NO") if k == "onnxruntime" else "",
                ]
            )
    L.append(
        _table(["model", "engine", "forward s", "end to end s", "masks", "speed-up fwd / e2e", "same objects"], rows)
    )
    gpu = x.get("gpu") or {}
    L.append("")
    if gpu.get("available"):
        L.append(f"GPU {gpu.get('gpu') or 'unknown'}:")
        L.append("")
        L.append(
            _table(
                ["provider", "precision", "batch", "forward s per tile"],
                [
                    [g["provider"], "half" if g["half"] else "float32", g["batch"], g["forward_s_per_tile"]]
                    for g in gpu["rows"]
                ],
            )
        )
    else:
        L.append(f"GPU rows: not measured ({gpu.get('note', 'no GPU')}).")
    return L


def _rows_section(x: dict[str, Any] | None, title: str, how: str, header: list[str], row: Any) -> list[str]:
    """A synthetic-town benchmark's section: title, the scene and ``how`` it ran, a table of ``row(r)`` per row."""
    if not x:
        return []
    L = ["", f"## {title}", ""]
    if _failed(x):
        return [*L, f"Failed: {_failed(x)}."]
    scene = f"a synthetic {x['scene']['size']} px town ({x['scene']['buildings']} buildings)"
    intro = f"The default model on {scene}, median of {x['rounds']} rounds, {how}; no mask cache."
    return [*L, intro, "", _table(header, [row(r) for r in x["rows"]])]


def _tta_section(x: dict[str, Any] | None) -> list[str]:
    """Views of each tile fused, 1 to 12 (benchmarks/bench_tta.py)."""
    return _rows_section(
        x,
        "Test-time augmentation (`--tta`)",
        "read at its working resolution, view counts interleaved",
        ["views", "run s", "s per tile", "time vs 1 view", "F1", "mean IoU"],
        lambda r: [
            r["tta"],
            f"{r['seconds']['median']:.2f}",
            r["seconds_per_tile"],
            f"{r['ratio_to_1']:.2f} x",
            r["f1"],
            r["mean_iou"],
        ],
    )


def _refine_section(x: dict[str, Any] | None) -> list[str]:
    """Raw and refined outlines, 1 and 12 views (benchmarks/bench_refine.py)."""
    return _rows_section(
        x,
        "Refined outlines (`--refine`)",
        "settings interleaved",
        ["views", "outlines", "run s", "time vs raw", "F1", "mean IoU"],
        lambda r: [
            r["tta"],
            "refined" if r["refine"] else "raw",
            f"{r['seconds']['median']:.2f}",
            f"{r['ratio_to_raw']:.3f} x",
            r["f1"],
            r["mean_iou"],
        ],
    )


def _install_section(x: dict[str, Any] | None) -> list[str]:
    """Size on disk and install time of the light and the torch install (benchmarks/bench_install.py)."""
    if not x:
        return []
    L = ["", "## Installs", ""]
    if _failed(x):
        return [*L, f"Failed: {_failed(x)}."]
    rows = []
    for name, key in (("light (ONNX Runtime)", "light"), ("with torch", "torch")):
        v = x.get(key, {})
        if "mib" in v:
            rows.append(
                [name, f"{v['mib']:,.1f} MiB", f"{v['seconds']:.1f} s", str(v["torch_importable"]), f"`{v['command']}`"]
            )
        else:
            rows.append([name, "not measured", "", "", v.get("skipped", "")])
    L.append(
        f"From an empty virtual environment (Python {x['python']}, pip's cache as it was), `du -sb` of the whole venv."
    )
    L.append("")
    L.append(_table(["install", "size on disk", "install time", "torch importable", "command"], rows))
    return L
