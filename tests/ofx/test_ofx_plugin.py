"""The OpenFX plugin in a Python test host, against the real engine service.

Output frames are compared with the engine's own output for the same inputs: the service and
the reference engine both run the seeded untrained network single-threaded on the CPU, so the
results are identical (8-bit exactly, float to float32 rounding).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from ofx_host import FAILED, GENERAL, OK, REPLY_DEFAULT, hanging_server, setup, to_rgba
from synthetic import bunny, starry_pan

from vst_engine.deflicker import even_out
from vst_engine.features import GlobalFeatures, load_shots, sample_indices

N_FRAMES = 12
PLAN = sample_indices(0, N_FRAMES, 8)  # the engine's sampling rule: [0, 8, 11]
WEIGHT_KEYS = {"weight1": {0: 1.0, 11: 0.0}, "weight2": {0: 0.25, 11: 1.0}}  # a cross-fade
STRENGTH = 0.8
ENTRY_POINTS = {"OfxGetNumberOfPlugins", "OfxGetPlugin"}


def peer_pid(path: Path) -> int:
    """The pid of the process listening on a Unix socket (SO_PEERCRED)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        pid, _uid, _gid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        return pid
    finally:
        s.close()


def stop_process(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def keyed(keys: dict, t: float) -> float:
    times = sorted(keys)
    if t <= times[0]:
        return keys[times[0]]
    if t >= times[-1]:
        return keys[times[-1]]
    a = max(k for k in times if k <= t)
    b = min(k for k in times if k >= t)
    return keys[a] if a == b else keys[a] + (keys[b] - keys[a]) * (t - a) / (b - a)


def f32(x: float) -> float:
    """What reaches the engine: the plugin sends weights and strength as float32."""
    return float(np.float32(x))


def expected(engine, clip_rgb, styles, times, *, as_float=False, consistency=True, preserve=False,
             weight_keys=WEIGHT_KEYS, strength=STRENGTH, deflicker=False) -> dict:
    """The engine's own output for these frames and settings (RGB, top row first)."""
    frames = [f.astype(np.float32) / np.float32(255) if as_float else f for f in clip_rgb]
    style_set = engine.load_styles(styles)
    source = engine.analyze([frames[i] for i in PLAN], style_set) if consistency else style_set
    # Deflickered: the analysis reads the frames as they are, the stylization takes them corrected.
    inputs = even_out(frames) if deflicker else frames
    out = {}
    for t in times:
        weights = [f32(keyed(weight_keys[f"weight{i + 1}"], t)) for i in range(len(styles))]
        out[t] = engine.stylize(inputs[t], source, weights, f32(strength), preserve, as_float=as_float)
    return out


def new_instance(host, clip_rgb, styles, dtype=np.uint8, **kw):
    return keyed_instance(host, {t: to_rgba(f, dtype) for t, f in enumerate(clip_rgb)}, styles, **kw)


def keyed_instance(host, frames, styles, **kw):
    """An instance on these RGBA frames with the test's strength and weight keys."""
    inst = setup(host, frames, styles, **kw)
    inst.set_value("strength", STRENGTH)
    for name, keys in WEIGHT_KEYS.items():
        inst.set_keys(name, {float(k): v for k, v in keys.items()})
    return inst


def assert_same(out: np.ndarray, ref: np.ndarray, as_float: bool = False) -> None:
    assert out.shape[:2] == ref.shape[:2]
    if as_float:
        np.testing.assert_allclose(out[..., :3], ref, rtol=0, atol=1e-6)
        assert np.all(out[..., 3] == 1.0)
    else:
        np.testing.assert_array_equal(out[..., :3], ref)
        assert np.all(out[..., 3] == 255)


@pytest.fixture(scope="module")
def styles(style_paths) -> list[str]:
    return [str(style_paths["stripes"]), str(style_paths["checker"])]


# ---- the binary ---------------------------------------------------------------------------

def test_bundle_layout_exports_and_links(ofx_build):
    binary = ofx_build.binary
    assert binary.name == "VideoStyleTransfer.ofx"
    assert binary.parent.name == "Linux-x86-64"
    assert binary.parents[2].name == "VideoStyleTransfer.ofx.bundle"
    assert (binary.parents[1] / "Resources").is_dir()
    nm = subprocess.run(["nm", "-D", "--defined-only", str(binary)], capture_output=True, text=True, check=True)
    exported = {line.split()[-1] for line in nm.stdout.splitlines() if line.strip()}
    assert exported == ENTRY_POINTS
    dyn = subprocess.run(["readelf", "-d", str(binary)], capture_output=True, text=True, check=True).stdout
    needed = {line.split("[")[1].rstrip("]") for line in dyn.splitlines() if "(NEEDED)" in line}
    assert "libc.so.6" in needed and needed <= {"libc.so.6", "libpthread.so.0", "libm.so.6"}, needed
    # Loadable on the VFX reference platforms' older glibc (Rocky/RHEL 8: 2.28).
    undef = subprocess.run(["nm", "-D", "--undefined-only", str(binary)], capture_output=True, text=True,
                           check=True).stdout
    versions = [tuple(int(x) for x in v.split("@GLIBC_")[1].split(".")) for v in undef.split() if "@GLIBC_" in v]
    assert max(versions) <= (2, 28), max(versions)


# ---- description ---------------------------------------------------------------------------

def test_describe(host):
    from ofx_host import BYTE, FILTER, FLOAT
    assert host.plugin.pluginApi == b"OfxImageEffectPluginAPI" and host.plugin.apiVersion == 1
    assert host.plugin.pluginIdentifier == b"org.videostyletransfer.VideoStyleTransfer"
    assert {("OfxPropertySuite", 1), ("OfxImageEffectSuite", 1), ("OfxParameterSuite", 1)} <= set(host.suites_asked)
    p = host.descriptor.props
    assert p.get("OfxPropLabel") == "Video Style Transfer"
    assert p.all("OfxImageEffectPropSupportedContexts") == [FILTER, GENERAL]
    assert p.all("OfxImageEffectPropSupportedPixelDepths") == [BYTE, FLOAT]
    assert p.get("OfxImageEffectPropTemporalClipAccess") == 1
    assert p.get("OfxImageEffectPluginRenderThreadSafety") == "OfxImageEffectRenderFullySafe"

    desc = host.context_descriptors[FILTER]
    assert set(desc.clips) == {"Source", "Output"}
    src = desc.clips["Source"].props
    assert src.get("OfxImageEffectPropTemporalClipAccess") == 1
    assert src.all("OfxImageEffectPropSupportedComponents") == ["OfxImageComponentRGBA"]
    assert desc.clips["Output"].props.all("OfxImageEffectPropSupportedComponents") == ["OfxImageComponentRGBA"]

    params = desc.param_set.params
    expected_names = ({f"style{i}" for i in range(1, 9)} | {f"weight{i}" for i in range(1, 9)}
                      | {"strength", "preserveColours", "consistency", "deflicker", "perShot", "maxSide", "analyze",
                         "engineStatus", "featuresId"})
    assert set(params) == expected_names
    ranges = ("OfxParamPropMin", "OfxParamPropMax", "OfxParamPropDisplayMin", "OfxParamPropDisplayMax")
    for name, prm in params.items():
        props = prm.props
        if prm.type in ("OfxParamTypeDouble", "OfxParamTypeInteger"):
            # DaVinci Resolve needs a range and a display range on every numeric parameter
            assert set(ranges) <= props.plugin_set, name
            want = "dbl" if prm.type == "OfxParamTypeDouble" else "int"
            assert all(props.type_of(r) == want for r in (*ranges, "OfxParamPropDefault")), name
        if prm.type == "OfxParamTypeString":
            assert props.get("OfxParamPropAnimates") == 0, name  # Resolve cannot animate strings
    for i in range(1, 9):
        style, weight = params[f"style{i}"].props, params[f"weight{i}"].props
        assert params[f"style{i}"].type == "OfxParamTypeString"
        assert style.get("OfxParamPropStringMode") == "OfxParamStringIsFilePath"
        assert params[f"weight{i}"].type == "OfxParamTypeDouble"
        assert [weight.get(r) for r in ranges] == [0.0, 1.0, 0.0, 1.0]
        assert weight.get("OfxParamPropAnimates") == 1
    strength = params["strength"].props
    assert [strength.get(r) for r in ranges] == [0.0, 1.0, 0.0, 1.0] and strength.get("OfxParamPropAnimates") == 1
    assert params["preserveColours"].type == "OfxParamTypeBoolean" and params["preserveColours"].default() == 0
    assert params["consistency"].type == "OfxParamTypeBoolean" and params["consistency"].default() == 1
    for name in ("deflicker", "perShot"):
        assert params[name].type == "OfxParamTypeBoolean" and params[name].default() == 0, name
    side = params["maxSide"]
    assert side.type == "OfxParamTypeInteger" and side.default() == 0 and side.props.get("OfxParamPropMin") == 0
    assert params["analyze"].type == "OfxParamTypePushButton"
    assert params["analyze"].props.get("OfxPropLabel") == "Analyze clip"
    status = params["engineStatus"].props
    assert status.get("OfxParamPropStringMode") == "OfxParamStringIsLabel"
    assert status.get("OfxPropLabel") == "Engine status" and status.get("OfxParamPropEvaluateOnChange") == 0
    assert params["featuresId"].props.get("OfxParamPropSecret") == 1
    assert host.problems == []


# ---- rendering against the engine ------------------------------------------------------------

def test_render_sequence_matches_engine(host, use_service, engine, clip_rgb, styles):
    """Keyed weights over a sequence; the first render analyses the clip through temporal access."""
    inst = new_instance(host, clip_rgb, styles)
    st, needed = inst.frames_needed(5)
    assert st == OK
    assert sorted(needed) == sorted([(5.0, 5.0)] + [(float(f), float(f)) for f in PLAN])

    assert inst.begin_sequence(0, N_FRAMES - 1) == OK
    ref = expected(engine, clip_rgb, styles, range(N_FRAMES))
    for t in range(N_FRAMES):
        st, out = inst.render(t)
        assert st == OK, host.messages
        assert_same(out, ref[t])
        fetched = sorted(f for f, _ in inst.source.fetches)
        # the first render fetches exactly the sampled frames (plus its own), the others only their own
        assert fetched == (sorted(PLAN + [0]) if t == 0 else [float(t)])
        inst.source.fetches.clear()
        assert inst.outstanding() == 0
    assert inst.end_sequence(0, N_FRAMES - 1) == OK
    assert host.messages == []
    assert all(action != "OfxImageEffectActionRender" for action, _, _ in host.param_sets)

    # Analyze stores the (deterministic) id in the hidden param; then no extra frames are needed.
    assert inst.user_edit("analyze") == OK
    assert sorted(f for f, _ in inst.source.fetches) == [float(f) for f in PLAN]
    assert inst.outstanding() == 0
    fid = inst.params["featuresId"].value
    assert len(fid) == 64 and int(fid, 16) >= 0
    assert inst.params["engineStatus"].value.startswith(f"Analysed {len(PLAN)} frames")
    assert (use_service.features / f"{fid}.vstf").is_file()
    assert inst.frames_needed(5)[0] == REPLY_DEFAULT
    assert inst.destroy() == OK
    assert host.problems == []


@pytest.mark.parametrize("dtype,layout,out_layout,origin", [
    (np.uint8, "padded", "negative", (0, 0)),
    (np.uint8, "negative", "packed", (16, 8)),
    (np.float32, "negative", "padded", (-3, 5)),
    (np.float32, "packed", "packed", (0, 0)),
])
def test_depths_and_row_layouts(host, use_service, engine, clip_rgb, styles, dtype, layout, out_layout, origin):
    """Negative and padded row bytes, offset bounds, 8-bit and float; analysis via the button."""
    inst = new_instance(host, clip_rgb, styles, dtype, layout=layout, out_layout=out_layout, origin=origin)
    assert inst.user_edit("analyze") == OK, host.messages
    times = [0, 5, 11]
    ref = expected(engine, clip_rgb, styles, times, as_float=dtype == np.float32)
    for t in times:
        st, out = inst.render(t)
        assert st == OK, host.messages
        assert out.dtype == dtype
        assert_same(out, ref[t], as_float=dtype == np.float32)
    assert inst.outstanding() == 0 and host.problems == [] and host.messages == []
    inst.destroy()


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_premultiplied_source_is_stylized_unpremultiplied(host, use_service, engine, clip_rgb, styles, dtype):
    """A premultiplied source reaches the engine divided by alpha (analysis and render), and the result
    is multiplied by alpha again; alpha passes through."""
    h, w = clip_rgb[0].shape[:2]
    alpha = np.tile(np.linspace(0, 255, w).round().astype(np.uint16), (h, 1))
    alpha[: h // 4] = 0  # a fully transparent band
    frames, straight = {}, []
    for t, rgb in enumerate(clip_rgb):
        if dtype == np.uint8:
            pre = ((rgb.astype(np.uint16) * alpha[..., None] + 127) // 255).astype(np.uint8)
            a = alpha[..., None]
            un = np.where(a > 0, np.minimum((pre.astype(np.uint32) * 255 + a // 2) // np.maximum(a, 1), 255), pre)
            straight.append(un.astype(np.uint8))
            frames[t] = np.concatenate([pre, alpha[..., None].astype(np.uint8)], axis=-1)
        else:
            a = (alpha.astype(np.float32) / np.float32(255))[..., None]
            pre = rgb.astype(np.float32) / np.float32(255) * a
            straight.append(np.where(a > 0, pre / np.where(a > 0, a, 1), pre).astype(np.float32))
            frames[t] = np.concatenate([pre, a], axis=-1).astype(np.float32)
    inst = keyed_instance(host, frames, styles)
    inst.source.premult = "OfxImageAlphaPremultiplied"
    assert inst.user_edit("analyze") == OK, host.messages
    style_set = engine.load_styles(styles)
    feats = engine.analyze([straight[i] for i in PLAN], style_set)
    for t in (0, 7):
        st, out = inst.render(t)
        assert st == OK, host.messages
        weights = [f32(keyed(WEIGHT_KEYS[f"weight{i + 1}"], t)) for i in range(len(styles))]
        ref = engine.stylize(straight[t], feats, weights, f32(STRENGTH), as_float=dtype == np.float32)
        if dtype == np.uint8:
            ref = (ref.astype(np.uint16) * alpha[..., None] + 127) // 255
            np.testing.assert_array_equal(out[..., :3], ref)
            np.testing.assert_array_equal(out[..., 3], alpha)
        else:
            np.testing.assert_allclose(out[..., :3], ref * frames[t][..., 3:], rtol=0, atol=1e-6)
            np.testing.assert_array_equal(out[..., 3], frames[t][..., 3])
        assert np.all(out[: h // 4, :, :3] == 0)  # no colour where alpha is 0
    assert inst.outstanding() == 0 and host.problems == [] and host.messages == []
    inst.destroy()


def test_render_window_and_options(host, use_service, engine, clip_rgb, styles):
    """Only the render window is written; strength, preserve colours and consistency off reach the engine."""
    inst = new_instance(host, clip_rgb, styles, origin=(4, 2))
    inst.set_value("consistency", 0)
    inst.set_value("preserveColours", 1)
    ref = expected(engine, clip_rgb, styles, [3], consistency=False, preserve=True)[3]
    st, out = inst.render(3, window=[14, 12, 40, 30])  # x 10..36, y 10..28 of the 64x48 frame (rows upwards)
    assert st == OK, host.messages
    rows = slice(48 - 28, 48 - 10)  # top-first row indices of y 10..27
    inside = np.zeros(out.shape[:2], bool)
    inside[rows, 10:36] = True
    np.testing.assert_array_equal(out[inside][:, :3], ref[inside])
    assert np.all(out[~inside] == 0x5A)  # the host's fill: untouched
    assert [f for f, _ in inst.source.fetches] == [3.0]  # no analysis with consistency off
    assert inst.frames_needed(3)[0] == REPLY_DEFAULT
    inst.destroy()


def test_concurrent_renders_analyse_once(host, use_service, engine, clip_rgb, styles):
    inst = new_instance(host, clip_rgb, styles)
    times = [1, 4, 7, 10]
    ref = expected(engine, clip_rgb, styles, times)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(inst.render, times))
    for t, (st, out) in zip(times, results):
        assert st == OK, host.messages
        assert_same(out, ref[t])
    fetched = sorted(f for f, _ in inst.source.fetches)
    assert fetched == sorted([float(f) for f in PLAN] + [float(t) for t in times])
    assert inst.outstanding() == 0 and host.problems == []
    inst.destroy()


def test_full_strength_analysis_then_own_colours(host, use_service, engine, clip_rgb, styles):
    """With strength 1 throughout, the first render's analysis skips the clip's own colours; keying a
    strength below 1 then declares and fetches the sampled frames once more, adds the own colours
    (the service's features then include them) and renders as the engine's complete analysis does."""
    inst = new_instance(host, clip_rgb, styles)
    inst.set_value("strength", 1.0)
    before = set(use_service.features.glob("*.vstf"))
    st, out = inst.render(2)
    assert st == OK, host.messages
    assert_same(out, expected(engine, clip_rgb, styles, [2], strength=1.0)[2])
    (lean,) = set(use_service.features.glob("*.vstf")) - before
    assert not GlobalFeatures.load(lean).has_own_colours
    assert inst.frames_needed(3)[0] == REPLY_DEFAULT  # strength 1 there: the lean analysis serves it

    strength = {0.0: 1.0, 11.0: 0.5}
    inst.set_keys("strength", strength)
    st, needed = inst.frames_needed(7)
    assert st == OK and sorted(needed) == sorted([(7.0, 7.0)] + [(float(f), float(f)) for f in PLAN])
    inst.source.fetches.clear()
    st, out = inst.render(7)
    assert st == OK, host.messages
    assert_same(out, expected(engine, clip_rgb, styles, [7], strength=keyed(strength, 7))[7])
    assert sorted(f for f, _ in inst.source.fetches) == sorted([float(f) for f in PLAN] + [7.0])
    assert any(GlobalFeatures.load(p).has_own_colours for p in use_service.features.glob("*.vstf"))
    inst.source.fetches.clear()
    st, out = inst.render(9)  # the completed analysis is kept: only the frame itself is fetched
    assert st == OK and [f for f, _ in inst.source.fetches] == [9.0]
    assert inst.frames_needed(9)[0] == REPLY_DEFAULT
    assert inst.outstanding() == 0 and host.problems == [] and host.messages == []
    inst.destroy()


def test_deflicker_reads_every_frame(host, use_service, engine, clip_rgb, styles):
    """With Deflicker the analysis reads (and declares) every frame of the clip; renders match the engine
    with each frame's correction; switching it off forgets the analysis."""
    inst = new_instance(host, clip_rgb, styles)
    inst.set_value("deflicker", 1)
    st, needed = inst.frames_needed(5)
    assert st == OK and sorted(needed) == [(0.0, float(N_FRAMES - 1)), (5.0, 5.0)]
    ref = expected(engine, clip_rgb, styles, [3, 10], deflicker=True)
    for t in (3, 10):
        st, out = inst.render(t)
        assert st == OK, host.messages
        assert_same(out, ref[t])
    assert sorted(f for f, _ in inst.source.fetches) == sorted([float(f) for f in range(N_FRAMES)] + [3.0, 10.0])
    assert inst.user_edit("analyze") == OK
    assert inst.params["engineStatus"].value.startswith(f"Analysed {N_FRAMES} frames")
    fid = inst.params["featuresId"].value
    assert GlobalFeatures.load(use_service.features / f"{fid}.vstf").deflickered
    assert inst.user_edit("deflicker", 0) == OK and inst.params["featuresId"].value == ""
    assert inst.outstanding() == 0 and host.problems == [] and host.messages == []
    inst.destroy()


def test_per_shot_analyses_each_shot(host, use_service, engine, styles):
    """With Per shot the analysis reads (and declares) every frame; the service finds the cut, and each
    shot renders with its own statistics, as the engine gives for that shot alone. A full-strength
    analysis is completed shot by shot when a strength below 1 appears; switching it off forgets it."""
    clip = bunny(0, 6, (64, 48)) + starry_pan(6, (64, 48))  # a cut at frame 6
    style_set = engine.load_styles(styles)
    shots = [engine.analyze([clip[i] for i in sample_indices(a, b, 8)], style_set) for a, b in ((0, 6), (6, 12))]
    inst = new_instance(host, clip, styles)
    inst.set_value("perShot", 1)
    inst.set_value("strength", 1.0)
    st, needed = inst.frames_needed(5)
    assert st == OK and sorted(needed) == [(0.0, float(N_FRAMES - 1)), (5.0, 5.0)]
    strength = {0.0: 1.0, 11.0: 0.5}
    for t in (3, 9):  # the first analyses for full strength; the second (strength 0.59) completes it
        if t == 9:
            inst.set_keys("strength", strength)
        st, out = inst.render(t)
        assert st == OK, host.messages
        weights = [f32(keyed(WEIGHT_KEYS[f"weight{i + 1}"], t)) for i in range(len(styles))]
        assert_same(out, engine.stylize(clip[t], shots[t // 6], weights, f32(keyed(strength, t)) if t == 9 else 1.0))
    assert sorted(f for f, _ in inst.source.fetches) == sorted([float(f) for f in range(N_FRAMES)] * 2 + [3.0, 9.0])
    complete = [load_shots(p) for p in use_service.features.glob("*.vstf")]
    assert any([f.frame_range for f in x] == [(0, 6), (6, 12)] and x[0].has_own_colours for x in complete)
    assert inst.user_edit("analyze") == OK
    fid = inst.params["featuresId"].value
    assert [f.sampled for f in load_shots(use_service.features / f"{fid}.vstf")] == [[0, 5], [6, 11]]
    assert inst.user_edit("perShot", 0) == OK and inst.params["featuresId"].value == ""
    assert inst.outstanding() == 0 and host.problems == [] and host.messages == []
    inst.destroy()


def test_no_style_passes_through_without_engine(host, clip_rgb, monkeypatch, short_tmp):
    monkeypatch.setenv("VST_SERVICE_SOCKET", str(short_tmp / "none.sock"))
    monkeypatch.setenv("VST_ENGINE_PYTHON", "/nonexistent/python")
    inst = new_instance(host, clip_rgb, [])
    st, out = inst.render(2)
    assert st == OK
    np.testing.assert_array_equal(out, to_rgba(clip_rgb[2], np.uint8))
    assert host.messages == []
    inst.destroy()


def test_editing_styles_forgets_the_analysis(host, use_service, clip_rgb, styles, style_paths):
    inst = new_instance(host, clip_rgb, styles)
    assert inst.user_edit("analyze") == OK
    assert len(inst.params["featuresId"].value) == 64
    assert inst.user_edit("style2", str(style_paths["dots"])) == OK
    assert inst.params["featuresId"].value == ""
    assert inst.params["engineStatus"].value.startswith("Not analysed")
    st, needed = inst.frames_needed(0)
    assert st == OK and len(needed) == len(PLAN) + 1  # the analysis is pending again
    inst.destroy()


# ---- failures: message, kOfxStatFailed, no crash, no hang ----------------------------------------

def last_error(host, n_before: int) -> str:
    errors = [text for kind, text, _ in host.messages[n_before:] if kind == "OfxMessageError"]
    assert errors, "no error message was posted"
    return errors[-1]


def test_engine_error_reply(host, use_service, clip_rgb, styles, tmp_path):
    inst = new_instance(host, clip_rgb, [styles[0], str(tmp_path / "gone.png")])
    inst.set_value("consistency", 0)
    st, _ = inst.render(0)
    assert st == FAILED
    assert "style image not found" in last_error(host, 0)
    # Analyze reports into the status param as well
    assert inst.user_edit("analyze") == FAILED
    assert inst.params["engineStatus"].value.startswith("Error:")
    assert inst.outstanding() == 0
    inst.destroy()


def test_failed_analyses_free_their_sessions(host, use_service, clip_rgb, styles):
    """A sampled frame the host cannot deliver fails the analysis; the open session is closed,
    so more failures than the service's 4 sessions still report the real cause."""
    inst = new_instance(host, clip_rgb, styles)
    del inst.source.frames[PLAN[1]]
    for _ in range(6):
        n = len(host.messages)
        assert inst.user_edit("analyze") == FAILED
        assert f"did not provide Source frame {PLAN[1]}" in last_error(host, n)
        assert inst.outstanding() == 0
    inst.destroy()


@pytest.mark.parametrize("python,expect", [
    ("/nonexistent/python", "not found or not executable"),
    ("/bin/false", "exited during start-up"),
])
def test_missing_engine(host, clip_rgb, styles, monkeypatch, short_tmp, python, expect):
    monkeypatch.setenv("VST_SERVICE_SOCKET", str(short_tmp / "engine" / "engine.sock"))
    monkeypatch.setenv("VST_ENGINE_PYTHON", python)
    inst = new_instance(host, clip_rgb, styles)
    start = time.monotonic()
    st, _ = inst.render(0)
    assert st == FAILED
    assert expect in last_error(host, 0)
    assert time.monotonic() - start < 10  # fails fast, not after the 60 s start-up timeout
    n = len(host.messages)
    assert inst.user_edit("analyze") == FAILED
    assert expect in last_error(host, n)
    assert inst.outstanding() == 0 and host.problems == []
    inst.destroy()


def test_refuses_to_start_the_engine_in_a_shared_folder(host, clip_rgb, styles, monkeypatch, short_tmp):
    shared = short_tmp / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    monkeypatch.setenv("VST_SERVICE_SOCKET", str(shared / "engine.sock"))
    monkeypatch.setenv("VST_ENGINE_PYTHON", sys.executable)
    inst = new_instance(host, clip_rgb, styles)
    assert inst.render(0)[0] == FAILED
    assert "not a folder private to this user" in last_error(host, 0)
    assert not (shared / "engine.sock.log").exists()
    inst.destroy()


def test_hanging_engine_times_out(host, clip_rgb, styles, monkeypatch, short_tmp):
    srv = hanging_server(str(short_tmp / "hang.sock"))
    try:
        monkeypatch.setenv("VST_SERVICE_SOCKET", str(short_tmp / "hang.sock"))
        monkeypatch.setenv("VST_SERVICE_TIMEOUT", "2")
        inst = new_instance(host, clip_rgb, styles)
        start = time.monotonic()
        st, _ = inst.render(0)  # consistency on: the analysis request hangs
        assert st == FAILED
        assert 1.5 < time.monotonic() - start < 20
        assert "no answer from the engine service within 2 s" in last_error(host, 0)
        assert inst.outstanding() == 0
        inst.destroy()
    finally:
        srv.close()


def test_plugin_starts_the_engine_and_survives_its_crash(host, engine, clip_rgb, styles, monkeypatch, short_tmp):
    """No service running: the plugin starts one (VST_ENGINE_PYTHON); killing it mid-request fails cleanly."""
    sock = short_tmp / "spawned" / "engine.sock"
    monkeypatch.setenv("VST_SERVICE_SOCKET", str(sock))
    monkeypatch.setenv("VST_ENGINE_PYTHON", sys.executable)
    monkeypatch.setenv("VST_MODEL", "untrained")
    monkeypatch.setenv("VST_FEATURES_DIR", str(short_tmp / "features"))
    monkeypatch.setenv("VST_SERVICE_START_TIMEOUT", "240")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as the reference engine: identical results
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    inst = new_instance(host, clip_rgb, styles)
    inst.set_value("consistency", 0)
    pid = None
    try:
        st, out = inst.render(6)
        assert st == OK, host.messages
        assert_same(out, expected(engine, clip_rgb, styles, [6], consistency=False)[6])
        assert (sock.parent / "engine.sock.log").is_file()
        pid = peer_pid(sock)
        assert os.getsid(pid) != os.getsid(0)  # detached in its own session

        # Freeze the service so the next request is in flight when it dies.
        os.kill(pid, signal.SIGSTOP)
        killer = threading.Timer(1.0, stop_process, args=(pid,))
        killer.start()
        start = time.monotonic()
        st, _ = inst.render(7)
        killer.join()
        assert st == FAILED
        assert "closed the connection" in last_error(host, 0)
        assert time.monotonic() - start < 30
        assert inst.outstanding() == 0 and host.problems == []
    finally:
        if pid is None and sock.exists():
            try:
                pid = peer_pid(sock)
            except OSError:
                pid = None
        if pid is not None:
            stop_process(pid)
    inst.destroy()


# ---- the same under AddressSanitizer and UBSan ---------------------------------------------------

def sanitizer_runtime(name: str) -> str | None:
    out = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    return out if os.path.isabs(out) and os.path.isfile(out) else None


def test_under_address_and_ub_sanitizers(ofx_build, use_service, engine, clip_rgb, styles, tmp_path):
    from build_bundle import build_bundle
    asan, ubsan = sanitizer_runtime("libasan.so"), sanitizer_runtime("libubsan.so")
    if not asan or not ubsan:
        pytest.skip("gcc's AddressSanitizer/UBSan runtimes are not installed")
    binary = build_bundle(tmp_path / "sanitized", sanitize=True)
    spec = {"styles": styles, "weight_keys": WEIGHT_KEYS, "strength": STRENGTH}
    np.savez(tmp_path / "in.npz", frames=np.stack(clip_rgb), spec=json.dumps(spec))
    env = dict(os.environ, LD_PRELOAD=f"{asan}:{ubsan}", ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("ofx_host.py")), "--binary", str(binary),
                           "--shim", str(ofx_build.shim), "--input", str(tmp_path / "in.npz"),
                           "--out", str(tmp_path / "out.npz")], env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert "Sanitizer" not in log and "runtime error" not in log, log[-6000:]
    assert proc.returncode == 0, log[-6000:]

    result = np.load(tmp_path / "out.npz")
    report = json.loads(str(result["report"]))
    assert report["asan_loaded"], "the scenario did not run under AddressSanitizer"
    assert report["problems"] == [] and report["outstanding"] == 0
    for tag, as_float in (("uint8", False), ("float32", True)):
        assert report["statuses"][f"{tag}_needed"] == OK
        assert report["statuses"][f"{tag}_analyze"] == OK
        assert sorted(report["fetches"][f"{tag}_analyze"]) == [float(f) for f in PLAN]
        assert sorted(report["fetches"][f"{tag}_render"]) == [float(t) for t in range(N_FRAMES)]
        ref = expected(engine, clip_rgb, styles, range(N_FRAMES), as_float=as_float)
        for t in range(N_FRAMES):
            assert report["statuses"][f"{tag}_render_{t}"] == OK
            assert_same(result[f"{tag}_{t}"], ref[t], as_float=as_float)
    for tag in ("uint8", "float32"):
        assert report["statuses"][f"premultiplied_{tag}"] == OK and report[f"premultiplied_{tag}_alpha_kept"]
    assert report["statuses"]["missing"] == FAILED and "VST_ENGINE_PYTHON" in report["messages"]["missing"][-1]
    assert report["statuses"]["hang"] == FAILED and "no answer" in report["messages"]["hang"][-1]
