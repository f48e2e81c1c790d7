"""Shots: cuts are found between shots and not within them; `vst stylize --per-shot` analyses each
shot on its own, exactly as if it were a clip of its own."""
from __future__ import annotations

import numpy as np
import pytest
from synthetic import bunny, starry_pan, write_folder
from test_cli import ok, pngs, visible_lines, vst_many

from vst_engine.errors import VstError
from vst_engine.features import GlobalFeatures, load_shots
from vst_engine.shots import CutFinder, shot_ranges

def test_cuts_are_found_between_shots_and_not_within():
    size = (160, 96)
    black, slate = [np.zeros((96, 160, 3), np.uint8)] * 3, [np.full((96, 160, 3), 150, np.uint8)] * 2
    # Motion within the bundled clip (30 frames) is no cut; the painting is; so is the clip again after a
    # fade through black (compared with the last frame before the black), and after a grey slate.
    clip = bunny(0, 30, size) + starry_pan(10, size) + black + bunny(60, 10, size) + slate + starry_pan(4, size)
    finder = CutFinder()
    for frame in clip:
        finder.add(frame)
    assert finder.cuts == [30, 43, 55] and finder.frames == 59
    assert shot_ranges(finder.cuts, 0, 59) == [(0, 30), (30, 43), (43, 55), (55, 59)]
    assert shot_ranges(finder.cuts, 35, 50) == [(35, 43), (43, 50)]
    assert shot_ranges([], 0, 5) == [(0, 5)]


def test_cli_per_shot(cli_env, style_paths, tmp_path):
    size = (64, 48)
    first, second = bunny(0, 6, size), starry_pan(6, size)
    joined = write_folder(tmp_path / "joined", first + second)
    alone = write_folder(tmp_path / "alone", second)
    style = ["-s", style_paths["dots"]]
    feats, lean, full = tmp_path / "shots.vstf", tmp_path / "lean.vstf", tmp_path / "full.vstf"
    runs = vst_many(cli_env, [
        ["stylize", joined, *style, "--per-shot", "-o", f"{tmp_path / 'shots'}/"],
        ["stylize", alone, *style, "-o", f"{tmp_path / 'alone_out'}/"],
        ["stylize", joined, *style, "-o", f"{tmp_path / 'whole'}/"],
        ["stylize", joined, *style, "--per-shot", "--frames", "8:10", "-o", f"{tmp_path / 'chunk'}/"],
        ["stylize", joined, *style, "--per-shot", "--frames", "0:3", "-o", f"{tmp_path / 'head'}/"],
        ["analyze", joined, *style, "--per-shot", "-o", feats],
        ["analyze", joined, *style, "--per-shot", "--full-strength", "-o", lean],
        ["analyze", joined, *style, "--per-shot", "--frames", "2:12", "-o", tmp_path / "part.vstf"],
    ])
    for proc in runs:
        ok(proc)
    assert runs[0].stdout.rstrip().endswith("/ (2 shots, cuts at frames 6)")
    # --frames 8:10 touches the second shot only, 0:3 the first (its analysis stops at the cut)
    assert runs[3].stdout.rstrip().endswith("/ (one shot)") and runs[4].stdout.rstrip().endswith("/ (one shot)")
    assert "analysed 4 of frames 0:12 at 64x48 (2 shots, cuts at frames 6) ->" in runs[5].stdout
    shots, alone_out, whole, chunk, head = (list(pngs(tmp_path / d).values())
                                            for d in ("shots", "alone_out", "whole", "chunk", "head"))
    # The second shot is stylized exactly as a clip of its own; the chunks as the whole render.
    assert all(np.array_equal(a, b) for a, b in zip(shots[6:], alone_out, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(chunk, shots[8:10], strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(head, shots[:3], strict=True))
    # Features pooled over both shots stylize it otherwise.
    assert np.mean([np.abs(a.astype(np.int16) - b).mean() for a, b in zip(whole[6:], shots[6:])]) > 2.0
    # The features file carries the shots; stylized with it, the frames are the same, and so they are with
    # full-strength features completed later (at a strength below 1, which needs the clip's own colours).
    assert [f.frame_range for f in load_shots(feats)] == [(0, 6), (6, 12)]
    with pytest.raises(VstError, match="holds the global features of 2 shots"):
        GlobalFeatures.load(feats)
    used, completed, weak, weak_used, no_global, with_features, outside = vst_many(cli_env, [
        ["stylize", joined, *style, "--features", feats, "--frames", "4:9", "-o", f"{tmp_path / 'used'}/"],
        ["analyze", joined, *style, "--complete", lean, "-o", full],
        ["stylize", joined, *style, "--per-shot", "--strength", "0.5", "-o", f"{tmp_path / 'weak'}/"],
        ["stylize", joined, *style, "--features", full, "--strength", "0.5", "-o", f"{tmp_path / 'weak_used'}/"],
        ["stylize", joined, *style, "--per-shot", "--no-global", "-o", f"{tmp_path / 'x'}/"],
        ["stylize", joined, *style, "--per-shot", "--features", feats, "-o", f"{tmp_path / 'x'}/"],
        ["stylize", joined, *style, "--features", tmp_path / "part.vstf", "--frames", "0:4", "-o", f"{tmp_path / 'x'}/"],
    ])
    for proc in (used, completed, weak, weak_used):
        ok(proc)
    assert "(2 shots, cuts at frames 6) (added the clip's own colours)" in completed.stdout
    assert all(np.array_equal(a, b) for a, b in zip(pngs(tmp_path / "used").values(), shots[4:9], strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(pngs(tmp_path / "weak_used").values(),
                                                    pngs(tmp_path / "weak").values(), strict=True))
    for proc, text in ((no_global, "leave out --no-global"), (with_features, "leave out --features"),
                       (outside, "frames 0:4 are not all within the frames 2:12")):
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert text in visible_lines(proc.stderr)[-1]
    assert not (tmp_path / "x").exists()
