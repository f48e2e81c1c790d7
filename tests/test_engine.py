"""Engine behaviour and values: global features, weights, colours, sizes, tiling, sampling.

All on tiny synthetic frames (at most 128x96) with the seeded untrained network, which is
deterministic; tests compare the engine with itself, never with "good looking" output.
"""
from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import vst_engine.engine as engine_mod
from vst_engine import GlobalFeatures, StyleSet, VstError, sample_indices
from vst_engine.engine import MULTIPLE, normalize_weights, process_size, slot_weights
from vst_engine.features import FORMAT, FORMAT_VERSION, StyleRef
from vst_engine.tiling import analysis_windows, tile_windows

REPO = Path(__file__).resolve().parent.parent


def mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 images."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def maxdiff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


@pytest.fixture(scope="module")
def two_styles(engine, style_paths) -> StyleSet:
    return engine.load_styles([style_paths["stripes"], style_paths["checker"]])


@pytest.fixture(scope="module")
def style1(engine, style_paths) -> StyleSet:
    return engine.load_styles([style_paths["stripes"]])


@pytest.fixture(scope="module")
def frame_a(make_frame) -> np.ndarray:
    return make_frame(0)


@pytest.fixture(scope="module")
def frame_b(make_frame) -> np.ndarray:
    # Very different content: inverted, flipped and later in the clip.
    return np.ascontiguousarray(255 - make_frame(20)[::-1])


@pytest.fixture(scope="module")
def feats_ab(engine, two_styles, frame_a, frame_b) -> GlobalFeatures:
    return engine.analyze([frame_a, frame_b], two_styles, interval=1, sampled=[0, 1], frame_range=(0, 2))


@pytest.fixture(scope="module")
def feats_a(engine, two_styles, frame_a) -> GlobalFeatures:
    return engine.analyze([frame_a], two_styles, interval=1, sampled=[0], frame_range=(0, 1))


# ---------------------------------------------------------------------------------------
# 1. Chunk invariance
# ---------------------------------------------------------------------------------------
def test_chunked_stylization_matches_single_pass(engine, style_paths, make_frame, tmp_path):
    from vst_engine import Engine

    w, h, n = 48, 32, 48
    frames = [make_frame(t, w, h) for t in range(n)]
    styles = engine.load_styles([style_paths["stripes"], style_paths["dots"]])
    picks = sample_indices(0, n, 8)
    feats = engine.analyze((frames[i] for i in picks), styles, source="synthetic", frame_range=(0, n),
                           interval=8, sampled=picks)
    assert feats.extra["frames_analysed"] == len(picks) == 7
    path = tmp_path / "clip.vstf"
    feats.save(path)

    weights = [0.3, 0.7]
    single = [engine.stylize(f, feats, weights) for f in frames]

    # Another engine, the features from disk, two chunks rendered in reverse order.
    fresh = Engine(model="untrained", device="cpu", tile_area=64 * 64)  # 48x32 frames stay untiled
    assert fresh.tile_area == 64 * 64
    loaded = GlobalFeatures.load(path)
    loaded.check(fresh.model.model_id, list(styles.refs), (w, h))
    second = [fresh.stylize(frames[i], loaded, weights) for i in range(24, 48)]
    first = [fresh.stylize(frames[i], loaded, weights) for i in range(0, 24)]
    for i, (a, b) in enumerate(zip(single, first + second)):
        assert a.shape == (h, w, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b), f"frame {i} differs between the single pass and the chunks"
    # Sanity: the clip is not trivially constant.
    assert mad(single[0], single[30]) > 1.0


# ---------------------------------------------------------------------------------------
# 2. Analysis memory does not grow with the clip length
# ---------------------------------------------------------------------------------------
_MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from vst_engine import Engine, sample_indices
    from vst_engine.features import StyleRef

    n, w, h = int(sys.argv[1]), 48, 32
    engine = Engine(model="untrained", device="cpu")
    style = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    styles = engine.style_set([StyleRef("noise", "0" * 64)], [style])
    picks = sample_indices(0, n, 8)
    made = []

    def frames():  # generated lazily: the clip never exists as a whole
        y, x = np.mgrid[0:h, 0:w]
        for i in picks:
            base = ((x * 4 + y * 2 + 7 * i) % 256).astype(np.uint8)[..., None].repeat(3, -1)
            made.append(i)
            yield base ^ np.random.default_rng(i).integers(0, 64, (h, w, 3), dtype=np.uint8)

    feats = engine.analyze(frames(), styles, frame_range=(0, n), interval=8, sampled=picks)
    d = feats.to_dict()
    tensors = {"norm_" + k: v for k, v in d["norm"].items()}
    tensors.update({"style_" + k: v for k, v in d["style"].items()}, content_desc=d["content_desc"])
    print(json.dumps({
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "generated": len(made), "analysed": feats.extra["frames_analysed"],
        "shapes": {k: [list(t.shape) for t in v] for k, v in tensors.items()},
    }))
""")


def test_analysis_memory_constant_in_clip_length():
    # Both at once: the short run is over long before the long one.
    procs = {n: subprocess.Popen([sys.executable, "-c", _MEMORY_SCRIPT, str(n)], cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for n in (10, 1000)}
    results = {}
    for n, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        results[n] = json.loads(out.strip().splitlines()[-1])
    short, long = results[10], results[1000]
    assert short["generated"] == short["analysed"] == len(sample_indices(0, 10, 8)) == 3
    assert long["generated"] == long["analysed"] == len(sample_indices(0, 1000, 8)) == 126
    assert long["shapes"] == short["shapes"], "stored statistics grow with the clip length"
    margin_kb = 0.05 * short["maxrss_kb"] + 20 * 1024
    assert long["maxrss_kb"] < short["maxrss_kb"] + margin_kb, (short["maxrss_kb"], long["maxrss_kb"])


# ---------------------------------------------------------------------------------------
# 3. Global features are shared by all frames
# ---------------------------------------------------------------------------------------
def test_frames_share_the_same_statistics(engine, feats_ab, frame_a, frame_b, monkeypatch):
    """Every normalization of two different frames uses identical (clip) statistics."""
    from vst_engine import norms

    seen: list[tuple[torch.Tensor, ...]] = []
    original = norms.SharedNorm.stats

    def spy(self, layer):
        out = original(self, layer)
        seen.append(tuple(t.clone() for t in out))
        return out

    monkeypatch.setattr(norms.SharedNorm, "stats", spy)
    out_a = engine.stylize(frame_a, feats_ab, [1, 0])
    stats_a, seen[:] = list(seen), []
    out_b = engine.stylize(frame_b, feats_ab, [1, 0])
    stats_b = list(seen)
    assert len(stats_a) == len(stats_b) == 11  # mean, std, min, max of each IN layer
    for sa, sb in zip(stats_a, stats_b):
        assert all(torch.equal(a, b) for a, b in zip(sa, sb))
    assert mad(out_a, out_b) > 5.0  # different content still gives different images


def test_new_weights_update_the_shared_statistics_in_place(engine, feats_ab, frame_a):
    """Changing the style weights between frames re-blends the clip statistics into the same
    device tensors (what a captured CUDA graph reads), and renders as a fresh engine would."""
    from vst_engine.engine import Engine

    engine.stylize(frame_a, feats_ab, [1, 0])
    norm = engine._shared.norm
    first = norm.stats(1)[0]
    before = first.clone()
    out = engine.stylize(frame_a, feats_ab, [0.2, 0.8], strength=0.7)
    assert engine._shared.norm is norm and norm.stats(1)[0] is first
    assert not torch.equal(first, before)
    fresh = Engine(model="untrained", device="cpu").stylize(frame_a, feats_ab, [0.2, 0.8], strength=0.7)
    assert np.array_equal(out, fresh)


def test_stylize_batch_equals_frame_by_frame(engine, feats_ab, frame_a, frame_b):
    frames = [frame_a, frame_b, frame_a]
    batch = engine.stylize_batch(frames, feats_ab, [0.5, 0.5])
    single = [engine.stylize(f, feats_ab, [0.5, 0.5]) for f in frames]
    assert len(batch) == 3 and all(b.shape == frame_a.shape and b.dtype == np.uint8 for b in batch)
    for b, s in zip(batch, single):
        assert np.abs(b.astype(int) - s.astype(int)).max() <= 1
    assert mad(batch[0], batch[1]) > 5.0
    with pytest.raises(VstError, match="same size"):
        engine.stylize_batch([frame_a, frame_a[:-8]], feats_ab)


def test_submitted_frames_come_back_in_order(engine, feats_ab, frame_a, frame_b):
    """`submit` leaves frames in flight (what `vst stylize` does); each result is its own batch's frames."""
    first = engine.submit([frame_a], feats_ab, [1, 0])
    second = engine.submit([frame_b, frame_a], feats_ab, [1, 0])
    assert engine.submit([], feats_ab).result() == []
    b, a = second.result()
    assert np.array_equal(first.result()[0], engine.stylize(frame_a, feats_ab, [1, 0]))
    for got, want in ((a, first.result()[0]), (b, engine.stylize(frame_b, feats_ab, [1, 0]))):
        assert np.abs(got.astype(int) - want).max() <= 1  # a batch of two rounds a little differently
    floats = engine.submit([frame_a], feats_ab, [1, 0], as_float=True).result()[0]
    assert floats.dtype == np.float32 and floats.shape == frame_a.shape and floats.flags.c_contiguous
    assert np.abs(floats * 255 - first.result()[0]).max() <= 0.5 + 1e-3


def test_a_stats_only_pass_records_what_a_full_pass_records(engine, feats_ab, frame_a):
    """The analysis's record pass stops after the last IN layer's statistics: the same records as a
    pass that renders the frame, and no frame."""
    from vst_engine.engine import slot_weights
    from vst_engine.imageops import desaturate, pad_to_multiple, to_tensor
    from vst_engine.norms import RecordNorm

    targets = feats_ab.style.blend(slot_weights([1, 0], 2, 1.0))
    x, _ = pad_to_multiple(to_tensor(frame_a, engine.device), 8, 16)
    full, stats = RecordNorm(), RecordNorm()
    with torch.no_grad():
        grey4 = engine.net.content(desaturate(x), engine.vgg)
        assert engine.net(grey4, targets, full).shape == x.shape
        assert engine.net(grey4, targets, stats, stats_only=True) is None
        assert [r[:2] for r in stats.layers] == [r[:2] for r in full.layers] and len(full.layers) > 5
        for a, b in zip(full.layers, stats.layers):
            assert all(torch.equal(u, v) for u, v in zip(a[2:], b[2:]))
    # packed for the analysis: every layer's sums and range side by side, then the descriptors
    layout, packed, descs = stats.packed()
    assert [r[:2] for r in layout.layers] == [r[:2] for r in stats.layers]
    channels = [c for *_, c in layout.layers]
    for k in range(4):
        for part, record in zip(packed[:, k].split(channels, dim=1), stats.layers, strict=True):
            assert torch.equal(part, record[2 + k].float())
    assert torch.equal(descs, torch.cat(stats.descs, dim=1)) and layout.desc_sizes == tuple(d.shape[1] for d in stats.descs)


def test_batched_forward_equals_frame_by_frame(engine, feats_ab, frame_a, frame_b):
    """A batch of frames with the clip's features (what the throughput benchmark times) renders
    each frame as a single-frame pass does."""
    from vst_engine.engine import slot_weights
    from vst_engine.imageops import to_tensor
    from vst_engine.network import StyleTargets

    alpha = slot_weights([1, 0], 2, 1.0)
    one = feats_ab.style.blend(alpha)
    two = StyleTargets(*[[t.expand(2, *t.shape[1:]) for t in ts] for ts in (one.mean, one.std, one.desc)])
    xa, xb = to_tensor(frame_a, engine.device), to_tensor(frame_b, engine.device)
    with torch.no_grad():
        batch = engine._forward(torch.cat([xa, xb]), two, feats_ab.shared_norm(alpha, engine.device))
        single = torch.cat([engine._forward(x, one, feats_ab.shared_norm(alpha, engine.device)) for x in (xa, xb)])
    assert batch.shape == (2, 3, *frame_a.shape[:2])
    assert (batch - single).abs().max() < 2e-3
    assert (batch[0] - batch[1]).abs().mean() > 0.02  # two different frames, not one repeated


def test_flat_frames_are_left_out_of_the_clip_statistics(engine, two_styles, feats_ab, frame_a, frame_b):
    """A black or single-colour frame (a fade-in, a slate) does not change the clip's features."""
    from vst_engine.engine import is_flat

    black = np.zeros_like(frame_a)
    red = np.zeros_like(frame_a)
    red[..., 0] = 200  # one colour, however bright, carries no texture
    assert is_flat(black) and is_flat(red) and is_flat(black.astype(np.float32) + 0.5)
    assert not is_flat(frame_a) and not is_flat((frame_a // 16).astype(np.uint8))  # dark but textured
    with_fades = engine.analyze([black, frame_a, red, frame_b], two_styles, interval=1, sampled=[0, 1, 2, 3],
                                frame_range=(0, 4))
    assert with_fades.extra == {"frames_analysed": 2, "flat_frames_skipped": 2, "own_colours": True}
    for t_fade, t_ref in zip(with_fades.norm_mean + with_fades.norm_std, feats_ab.norm_mean + feats_ab.norm_std):
        assert torch.equal(t_fade, t_ref)
    assert maxdiff(engine.stylize(frame_a, with_fades, [1, 0]), engine.stylize(frame_a, feats_ab, [1, 0])) == 0


def test_all_flat_clip_still_gets_features(engine, two_styles, frame_a):
    black = np.zeros_like(frame_a)
    feats = engine.analyze([black, black], two_styles, interval=1, sampled=[0, 1], frame_range=(0, 2))
    assert feats.extra == {"frames_analysed": 1, "flat_frames_skipped": 2, "own_colours": True}
    assert all(torch.isfinite(t).all() for t in feats.norm_mean + feats.norm_std)
    out = engine.stylize(black, feats, [1, 0])
    assert out.shape == black.shape and out.dtype == np.uint8


def test_global_differs_from_local_when_clip_differs(engine, two_styles, feats_ab, frame_a):
    local = engine.stylize(frame_a, two_styles, [1, 0])
    shared = engine.stylize(frame_a, feats_ab, [1, 0])
    assert local.shape == shared.shape == frame_a.shape
    assert mad(local, shared) > 2.0


@pytest.mark.parametrize("weights", [[1, 0], [0, 1]])
def test_single_frame_features_equal_local_mode(engine, two_styles, feats_a, frame_a, weights):
    local = engine.stylize(frame_a, two_styles, weights)
    shared = engine.stylize(frame_a, feats_a, weights)
    assert maxdiff(local, shared) <= 1


def test_features_do_not_depend_on_frame_order(engine, two_styles, feats_ab, frame_a, frame_b):
    feats_ba = engine.analyze([frame_b, frame_a], two_styles, interval=1, sampled=[0, 1])
    assert maxdiff(engine.stylize(frame_a, feats_ab), engine.stylize(frame_a, feats_ba)) <= 1


# ---------------------------------------------------------------------------------------
# 4. Features file
# ---------------------------------------------------------------------------------------
def _flatten(d, prefix=""):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _flatten(v, f"{prefix}/{k}")
    elif isinstance(d, (list, tuple)) and d and isinstance(d[0], torch.Tensor):
        for i, v in enumerate(d):
            yield f"{prefix}/{i}", v
    else:
        yield prefix, d


def test_features_file_round_trip(engine, feats_ab, tmp_path):
    feats = dataclasses.replace(feats_ab, source="clip ü.mp4", frame_range=(3, 50), interval=8,
                                sampled=[3, 11, 19, 27, 35, 43, 49], settings={"max_side": 96})
    path = tmp_path / "sub dir" / "f.vstf"
    path.parent.mkdir()
    feats.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["f.vstf"]  # no temporaries left
    loaded = GlobalFeatures.load(path)
    a, b = dict(_flatten(feats.to_dict())), dict(_flatten(loaded.to_dict()))
    assert a.keys() == b.keys()
    tensors = 0
    for k, v in a.items():
        if isinstance(v, torch.Tensor):
            tensors += 1
            assert v.dtype == b[k].dtype and torch.equal(v, b[k]), k
        else:
            assert v == b[k], k
    assert tensors == 4 * 11 + 6 + (4 + 4 + 6)  # norm, content desc, style mean/std/desc
    assert loaded.model_id == engine.model.model_id
    assert loaded.styles == feats.styles and all(isinstance(s, StyleRef) for s in loaded.styles)
    assert loaded.process_size == (64, 48) and loaded.frame_range == (3, 50)
    assert loaded.settings == {"max_side": 96}
    assert feats_ab.settings == {"style_size": engine.style_size}  # recorded by analyze
    assert loaded.extra == {"frames_analysed": 2, "flat_frames_skipped": 0, "own_colours": True}
    assert loaded.slots == 3
    loaded.check(engine.model.model_id, feats.styles, (64, 48))  # no error


def test_features_check_refuses_mismatches(engine, feats_ab, style_paths):
    mid = engine.model.model_id
    other = engine.load_styles([style_paths["stripes"], style_paths["dots"]])
    with pytest.raises(VstError, match="other styles"):
        feats_ab.check(mid, list(other.refs))
    with pytest.raises(VstError, match="other styles"):  # same images, other order
        feats_ab.check(mid, list(reversed(feats_ab.styles)))
    with pytest.raises(VstError, match="other styles"):  # a subset
        feats_ab.check(mid, feats_ab.styles[:1])
    with pytest.raises(VstError, match="model"):
        feats_ab.check("another-model-0123456789abcdef", feats_ab.styles)
    with pytest.raises(VstError, match="64x48"):
        feats_ab.check(mid, feats_ab.styles, (96, 72))
    # The same style file under another name is the same style (identified by content).
    renamed = [StyleRef("renamed", s.sha256) for s in feats_ab.styles]
    feats_ab.check(mid, renamed, (64, 48))


def test_stylize_refuses_features_of_another_size_or_model(engine, feats_ab, make_frame):
    with pytest.raises(VstError):
        engine.stylize(make_frame(0, 48, 32), feats_ab)
    foreign = dataclasses.replace(feats_ab, model_id="someone-else")
    with pytest.raises(VstError):
        engine.stylize(make_frame(0), foreign)


def test_features_load_refuses_bad_files(feats_ab, tmp_path):
    good = tmp_path / "good.vstf"
    feats_ab.save(good)
    raw = good.read_bytes()

    cases = {
        "random.vstf": np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "empty.vstf": b"",
        "truncated.vstf": raw[: len(raw) // 2],
        "text.vstf": b"hello, not a features file\n",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(VstError):
            GlobalFeatures.load(tmp_path / name)
    with pytest.raises(VstError, match="not found"):
        GlobalFeatures.load(tmp_path / "missing.vstf")
    with pytest.raises(VstError):
        GlobalFeatures.load(tmp_path)  # a folder

    # Valid torch files that are not features files, or of another version.
    for name, obj in {"list.vstf": [1, 2, 3], "other.vstf": {"format": "vst-model", "version": 1},
                      "version.vstf": {**feats_ab.to_dict(), "version": FORMAT_VERSION + 1}}.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(VstError):
            GlobalFeatures.load(tmp_path / name)


class _Payload:
    """Unpickling this runs code (creates a marker file): a weights_only load must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_features_load_refuses_arbitrary_pickles(tmp_path):
    marker = tmp_path / "code-was-executed"
    for name, obj in {"payload.vstf": {"format": FORMAT, "version": FORMAT_VERSION, "meta": _Payload(marker)},
                      "object.vstf": {"format": FORMAT, "version": FORMAT_VERSION, "x": _Payload}}.items():
        torch.save(obj, tmp_path / name, pickle_protocol=2)
        with pytest.raises(VstError):
            GlobalFeatures.load(tmp_path / name)
    # Plain pickle (not a torch zip file) with a payload.
    (tmp_path / "plain.vstf").write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    with pytest.raises(VstError):
        GlobalFeatures.load(tmp_path / "plain.vstf")
    assert not marker.exists()


@pytest.mark.parametrize("broken", ["no_meta", "no_norm", "bad_styles"])
def test_features_load_refuses_malformed_contents(feats_ab, tmp_path, broken):
    d = feats_ab.to_dict()
    if broken == "no_meta":
        del d["meta"]
    elif broken == "no_norm":
        del d["norm"]
    else:
        d["meta"]["styles"] = [["only-a-name"]]
    torch.save(d, tmp_path / "f.vstf")
    with pytest.raises(VstError):
        GlobalFeatures.load(tmp_path / "f.vstf")


# ---------------------------------------------------------------------------------------
# 5. Weights and strength
# ---------------------------------------------------------------------------------------
BAD_WEIGHTS = {
    "negative": [-1.0, 2.0],
    "nan": [float("nan"), 1.0],
    "inf": [float("inf"), 1.0],
    "minus-inf": [1.0, float("-inf")],
    "all-zero": [0.0, 0.0],
    "too-few": [1.0],
    "too-many": [1.0, 1.0, 1.0],
    "empty": [],
}


@pytest.mark.parametrize("name", list(BAD_WEIGHTS))
def test_bad_weights_refused(engine, two_styles, feats_a, frame_a, name):
    weights = BAD_WEIGHTS[name]
    with pytest.raises(VstError):
        normalize_weights(weights, 2)
    for source in (feats_a, two_styles):
        with pytest.raises(VstError):
            engine.stylize(frame_a, source, weights)


def test_normalize_and_slot_weights():
    assert np.allclose(normalize_weights([2, 2], 2), [0.5, 0.5])
    assert np.allclose(normalize_weights(None, 4), [0.25] * 4)
    assert np.allclose(normalize_weights([0, 3, 1], 3), [0, 0.75, 0.25])
    a = slot_weights([1, 3], 2, 0.8)
    assert a.shape == (1, 3)
    assert torch.allclose(a, torch.tensor([[0.2, 0.2, 0.6]]))
    assert float(a.sum()) == pytest.approx(1.0)
    assert torch.equal(slot_weights([1, 0], 2, 0.0), torch.tensor([[1.0, 0.0, 0.0]]))


def test_weights_are_normalized(engine, two_styles, feats_ab, frame_a):
    for source in (feats_ab, two_styles):
        assert np.array_equal(engine.stylize(frame_a, source, [2, 2]), engine.stylize(frame_a, source, [1, 1]))
        assert np.array_equal(engine.stylize(frame_a, source, None), engine.stylize(frame_a, source, [0.5, 0.5]))
        assert np.array_equal(engine.stylize(frame_a, source, [3, 1]), engine.stylize(frame_a, source, [0.75, 0.25]))


def test_one_hot_weight_equals_single_style(engine, two_styles, style1, feats_ab, frame_a, frame_b):
    # Local statistics.
    assert maxdiff(engine.stylize(frame_a, two_styles, [1, 0]), engine.stylize(frame_a, style1)) <= 1
    # Global statistics: a features file made with style 1 alone.
    alone = engine.analyze([frame_a, frame_b], style1, interval=1, sampled=[0, 1])
    assert maxdiff(engine.stylize(frame_a, feats_ab, [1, 0]), engine.stylize(frame_a, alone)) <= 1
    # ... and the other style really is different.
    assert mad(engine.stylize(frame_a, feats_ab, [0, 1]), engine.stylize(frame_a, alone)) > 10


@pytest.mark.parametrize("strength", [-0.1, 1.01, 2.0, float("nan"), float("inf")])
def test_bad_strength_refused(engine, two_styles, feats_a, frame_a, strength):
    for source in (feats_a, two_styles):
        with pytest.raises(VstError, match="strength"):
            engine.stylize(frame_a, source, strength=strength)


def test_strength_changes_output(engine, two_styles, feats_ab, frame_a):
    for source in (feats_ab, two_styles):
        outs = [engine.stylize(frame_a, source, strength=s) for s in (0.0, 0.5, 1.0)]
        assert mad(outs[0], outs[1]) > 2 and mad(outs[1], outs[2]) > 2 and mad(outs[0], outs[2]) > 2
        assert mad(outs[1], engine.stylize(frame_a, source, strength=0.55)) < mad(outs[0], outs[2])


def test_weights_change_output_smoothly(engine, feats_ab, frame_a):
    out = {w: engine.stylize(frame_a, feats_ab, [1 - w, w]) for w in (0.0, 0.5, 0.55, 1.0)}
    small, large = mad(out[0.5], out[0.55]), mad(out[0.0], out[1.0])
    assert 0 < small < large / 4
    assert mad(out[0.0], out[0.5]) < large and mad(out[0.5], out[1.0]) < large


# ---------------------------------------------------------------------------------------
# 6. Preserve colour
# ---------------------------------------------------------------------------------------
def _chroma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)[..., 1:].astype(np.int16)


def test_preserve_color_keeps_input_chroma(engine, two_styles, feats_ab, frame_a):
    for source in (feats_ab, two_styles):
        kept = engine.stylize(frame_a, source, [0, 1], preserve_color=True)
        free = engine.stylize(frame_a, source, [0, 1])
        assert kept.shape == frame_a.shape
        unclipped = ~((kept == 0) | (kept == 255)).any(-1)
        assert unclipped.mean() > 0.2  # enough pixels to judge
        d_kept = np.abs(_chroma(kept) - _chroma(frame_a))[unclipped].mean()
        d_free = np.abs(_chroma(free) - _chroma(frame_a)).mean()
        assert d_kept < 3, d_kept
        assert d_free > 3 * d_kept + 5, (d_free, d_kept)
        # The luminance is the stylized one, not the input's.
        luma = lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2YCrCb)[..., 0].astype(np.int16)  # noqa: E731
        assert np.abs(luma(kept) - luma(frame_a)).mean() > 5


# ---------------------------------------------------------------------------------------
# 7. Sizes and tiling
# ---------------------------------------------------------------------------------------
def test_odd_frame_size_round_trips(engine, two_styles, make_frame):
    frame = make_frame(5, 37, 29)
    feats = engine.analyze([frame, make_frame(6, 37, 29)], two_styles)
    assert feats.process_size == (37, 29)
    for out in (engine.stylize(frame, feats), engine.stylize(frame, two_styles),
                engine.stylize(frame, feats, preserve_color=True)):
        assert out.shape == (29, 37, 3) and out.dtype == np.uint8


def test_analysis_refuses_mixed_sizes_and_empty_input(engine, two_styles, make_frame):
    with pytest.raises(VstError, match="same size"):
        engine.analyze([make_frame(0), make_frame(1, 48, 32)], two_styles)
    with pytest.raises(VstError, match="no frames"):
        engine.analyze([], two_styles)
    with pytest.raises(VstError):
        engine.load_styles([])


@pytest.mark.parametrize("size,max_side,expected", [
    ((1280, 720), 96, (96, 54)),
    ((720, 1280), 96, (54, 96)),
    ((1920, 1080), 1280, (1280, 720)),
    ((1000, 10), 96, (96, 1)),
    ((37, 29), None, (37, 29)),
    ((37, 29), 64, (37, 29)),   # never upscaled
    ((64, 48), 64, (64, 48)),
])
def test_process_size(size, max_side, expected):
    assert process_size(*size, max_side) == expected


@pytest.mark.parametrize("w,h", [(1280, 720), (1920, 1080), (1000, 333), (333, 1000), (4096, 2160), (641, 479)])
@pytest.mark.parametrize("max_side", [96, 257, 512])
def test_process_size_keeps_aspect_ratio(w, h, max_side):
    pw, ph = process_size(w, h, max_side)
    assert max(pw, ph) == max_side
    # Within the rounding of the shorter side.
    assert abs(pw / ph - w / h) <= (w / h) * (1 / min(pw, ph)) + 1e-9


@pytest.mark.parametrize("h, w, size", [(1080, 1920, 768), (2160, 3840, 768), (800, 769, 768), (768, 1366, 768),
                                         (1085, 1301, 768), (97, 64, 768), (700, 700, 768), (2160, 3840, 2048)])
def test_tile_windows_cover_the_frame_with_the_overlap_and_little_more(h, w, size):
    overlap = 128
    windows = tile_windows(h, w, size, overlap, MULTIPLE)
    cover = np.zeros((h, w), np.int32)
    for y0, y1, x0, x1 in windows:
        assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
        assert y1 - y0 <= size and x1 - x0 <= size
        assert y0 % MULTIPLE == 0 and x0 % MULTIPLE == 0  # on the encoder's pooling grid
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1
    for axis in (0, 1):  # neighbours along each axis overlap by at least `overlap`
        spans = sorted({(win[2 * axis], win[2 * axis + 1]) for win in windows})
        assert all(a1 - b0 >= overlap for (_, a1), (b0, _) in zip(spans, spans[1:]))
    area = sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in windows)
    if (h, w) == (1080, 1920):  # 6 tiles of 608 x 728; full 768 x 768 tiles covered 1.7x the frame
        assert len(windows) == 6 and area <= 1.3 * h * w
    if size == 2048:  # CUDA's 4K tiles: 4 of one shape, 1.09x the frame (768-px tiles: 24, 1.39x)
        assert len(windows) == 4 and len({(y1 - y0, x1 - x0) for y0, y1, x0, x1 in windows}) == 1
        assert area <= 1.1 * h * w


@pytest.mark.parametrize("h, w", [(1080, 1920), (2160, 3840), (2160, 4096), (1090, 1500), (737, 1281), (97, 64)])
def test_analysis_windows_cover_the_frame_once_but_for_a_sliver_in_one_shape(h, w):
    """The analysis adds sums over its tiles: every pixel is counted, neighbours overlap by at most one
    grid unit, and once padded to the grid every tile has one shape (one compilation)."""
    windows = analysis_windows(h, w, 768, MULTIPLE)
    cover = np.zeros((h, w), np.int32)
    for y0, y1, x0, x1 in windows:
        assert y0 % MULTIPLE == 0 and x0 % MULTIPLE == 0 and y1 - y0 <= 768 and x1 - x0 <= 768
        cover[y0:y1, x0:x1] += 1
    assert cover.min() == 1 and cover.max() <= 4  # 4: where the row and column slivers cross
    assert cover.sum() <= 1.01 * h * w
    for axis in (0, 1):  # neighbours overlap by at most one grid unit
        spans = sorted({(win[2 * axis], win[2 * axis + 1]) for win in windows})
        assert all(0 <= a1 - b0 <= MULTIPLE for (_, a1), (b0, _) in zip(spans, spans[1:]))
    assert len({(-(-(y1 - y0) // MULTIPLE), -(-(x1 - x0) // MULTIPLE)) for y0, y1, x0, x1 in windows}) == 1
    if (h, w) == (1080, 1920):  # an exact partition had 4 shapes here
        assert len(windows) == 6 and (windows[0][1], windows[0][3]) == (544, 640)


def test_the_analysis_takes_the_largest_tiles_the_tile_area_allows():
    """Each analysis tile is normalized on its own: fewer, larger tiles keep a tiled frame's features
    nearer a whole frame's. A CPU analyses 1920x1080 in 4 tiles of 544x960, CUDA 3840x2160 in 4 of
    1080x1920."""
    for device, (h, w), tile in (("cpu", (1080, 1920), (544, 960)), ("cuda", (2160, 3840), (1080, 1920))):
        area = engine_mod.DEFAULT_TILE_AREA[device]
        side = engine_mod.Engine(model="untrained", device="cpu", tile_area=area)._largest_tile_side()
        windows = analysis_windows(h, w, side, MULTIPLE)
        assert h * w > area and len(windows) == 4
        assert {(y1 - y0, x1 - x0) for y0, y1, x0, x1 in windows} == {tile} and tile[0] * tile[1] <= area


# Tiles of 64 with 32 overlap on a 128x96 frame: 3 x 2 tiles. (Smaller tiles are dominated by
# the VGG receptive field, about 68 px at relu4_1, so every pixel would sit on a tile border.)
TILE, OVERLAP = 64, 32


@pytest.fixture
def small_tiles(monkeypatch, engine):
    monkeypatch.setattr(engine_mod, "TILE_SIZE", TILE)
    monkeypatch.setattr(engine_mod, "TILE_OVERLAP", OVERLAP)

    def use(tiled: bool) -> None:
        monkeypatch.setattr(engine, "tile_area", 32 * 32 if tiled else 10 ** 9)

    return use


@pytest.fixture(scope="module")
def big_frame(make_frame) -> np.ndarray:
    return make_frame(3, 128, 96)


def test_tiled_render_close_to_untiled_without_seams(engine, two_styles, big_frame, small_tiles):
    h, w = big_frame.shape[:2]
    windows = tile_windows(h, w, TILE, OVERLAP, MULTIPLE)
    assert len(windows) == 6
    small_tiles(False)
    feats = engine.analyze([big_frame], two_styles)
    whole = engine.stylize(big_frame, feats)
    style_gap = mad(engine.stylize(big_frame, feats, [1, 0]), engine.stylize(big_frame, feats, [0, 1]))

    # Controls: tiles pasted with hard edges (shared statistics), and tiles each with their own
    # (local) statistics, cross-fading nothing.
    hard, local = np.zeros_like(whole), np.zeros_like(whole)
    for y0, y1, x0, x1 in windows:
        tile = np.ascontiguousarray(big_frame[y0:y1, x0:x1])
        hard[y0:y1, x0:x1] = engine.stylize(tile, dataclasses.replace(feats, process_size=(x1 - x0, y1 - y0)))
        local[y0:y1, x0:x1] = engine.stylize(tile, two_styles)

    small_tiles(True)
    tiled = engine.stylize(big_frame, feats)
    assert tiled.shape == whole.shape
    assert mad(tiled, whole) < 0.25 * style_gap
    assert mad(tiled, whole) < 0.5 * mad(local, whole)  # shared statistics are what make tiles agree

    # Seams: the step between the columns (rows) on either side of a tile edge, compared with
    # the same place in the untiled image. Hard-edged tiles show a clear step there.
    xs = sorted({x0 for _, _, x0, _ in windows if x0 > 0} | {x1 for _, _, _, x1 in windows if x1 < w})
    ys = sorted({y0 for y0, _, _, _ in windows if y0 > 0} | {y1 for _, y1, _, _ in windows if y1 < h})

    def step(img: np.ndarray) -> float:
        i = img.astype(np.int16)
        gx = np.abs(i[:, 1:] - i[:, :-1]).mean(axis=(0, 2))
        gy = np.abs(i[1:] - i[:-1]).mean(axis=(1, 2))
        return float(np.concatenate([gx[[x - 1 for x in xs]], gy[[y - 1 for y in ys]]]).mean())

    assert step(tiled) < 1.25 * step(whole) + 2, (step(tiled), step(whole))
    assert step(hard) > 1.5 * step(whole) + 2, "the seam measure should see hard tile edges"


def test_tiled_local_mode_and_odd_sizes(engine, two_styles, make_frame, small_tiles):
    small_tiles(True)
    frame = make_frame(2, 101, 75)
    assert engine.stylize(frame, two_styles).shape == (75, 101, 3)
    feats = engine.analyze([frame], two_styles)
    assert engine.stylize(frame, feats).shape == (75, 101, 3)


def analysed_whole_and_tiled(engine, styles, frame, small_tiles):
    """Features of `frame` analysed whole and in small tiles, the untiled render with the whole
    ones, and the change a switch of style makes to it (the scale of a visible difference)."""
    small_tiles(False)
    whole = engine.analyze([frame], styles)
    ref = engine.stylize(frame, whole)
    style_gap = mad(engine.stylize(frame, whole, [1, 0]), engine.stylize(frame, whole, [0, 1]))
    small_tiles(True)
    return whole, engine.analyze([frame], styles), ref, style_gap


def test_tiled_analysis_close_to_untiled(engine, two_styles, big_frame, small_tiles):
    whole, tiled, ref, style_gap = analysed_whole_and_tiled(engine, two_styles, big_frame, small_tiles)
    assert tiled.extra["frames_analysed"] == 1
    for name in ("norm_mean", "norm_std", "norm_min", "norm_max", "content_desc"):
        for a, b in zip(getattr(whole, name), getattr(tiled, name)):
            assert a.shape == b.shape and torch.isfinite(b).all()
    for ta, tb in zip(dataclasses.astuple(whole.style), dataclasses.astuple(tiled.style)):
        for a, b in zip(ta, tb):
            assert torch.equal(a[1:], b[1:])  # style slots do not depend on the clip
    # Rendered untiled with either set of features: close compared with a change of style.
    small_tiles(False)
    assert mad(engine.stylize(big_frame, tiled), ref) < 0.3 * style_gap


def test_tiled_analysis_counts_every_pixel_once(engine, two_styles, small_tiles):
    # Two flat colours: rows 0-63 red, rows 64-95 blue. With 64 px analysis windows the rows
    # are cut [0, 64) and [32, 96): rows 32-63 (red) would count twice and tilt the mean.
    frame = np.zeros((96, 128, 3), np.uint8)
    frame[:64] = (200, 40, 40)
    frame[64:] = (30, 60, 220)
    small_tiles(False)
    whole = engine.analyze([frame], two_styles)
    small_tiles(True)
    tiled = engine.analyze([frame], two_styles)
    # Clip's own colour statistics at relu1_1 (slot 0): only 1-px conv borders may differ.
    a, b = whole.style.mean[0][0], tiled.style.mean[0][0]
    assert float((a - b).abs().max() / a.abs().max()) < 0.05


# ---------------------------------------------------------------------------------------
# 8. Frame sampling
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,expected", [
    ((0, 20, 8), [0, 8, 16, 19]),
    ((0, 17, 8), [0, 8, 16]),
    ((0, 16, 8), [0, 8, 15]),
    ((3, 20, 8), [3, 11, 19]),
    ((0, 5, 1), [0, 1, 2, 3, 4]),
    ((0, 1, 8), [0]),
    ((7, 8, 8), [7]),
    ((0, 0, 8), []),
    ((5, 5, 1), []),
    ((9, 4, 8), []),
])
def test_sample_indices(args, expected):
    assert sample_indices(*args) == expected


@pytest.mark.parametrize("interval", [0, -1, -8])
def test_sample_indices_bad_interval(interval):
    with pytest.raises(VstError, match="interval"):
        sample_indices(0, 20, interval)


def test_compiled_passes_match_eager_and_fall_back_on_failure(engine, feats_ab, two_styles, frame_a, frame_b,
                                                              monkeypatch):
    """torch.compile (the CUDA default; forced here on the CPU) analyses and renders as the eager
    passes do, and a compilation that fails leaves the engine eager, saying why, instead of failing."""
    from vst_engine.engine import Engine

    compiled = Engine(model="untrained", device="cpu", compile=True)
    feats = compiled.analyze([frame_a, frame_b], two_styles, interval=1, sampled=[0, 1], frame_range=(0, 2))
    for mine, ref in zip([*feats.norm_mean, *feats.norm_std, *feats.norm_min, *feats.norm_max, *feats.content_desc],
                         [*feats_ab.norm_mean, *feats_ab.norm_std, *feats_ab.norm_min, *feats_ab.norm_max,
                          *feats_ab.content_desc]):
        assert torch.allclose(mine, ref, rtol=1e-3, atol=1e-4)
    eager = engine.stylize(frame_a, feats_ab, [1, 0])
    assert maxdiff(compiled.stylize(frame_a, feats_ab, [1, 0]), eager) <= 1
    assert compiled.acceleration == "compiled" and not compiled.winograd
    assert engine.acceleration == ("eager + Winograd convolutions (NNPACK)" if engine.winograd else "eager")

    def broken_compile(fn, **options):
        def run(*args):
            raise RuntimeError("no C compiler found\nsecond line")
        return run
    monkeypatch.setattr(torch, "compile", broken_compile)
    failing = Engine(model="untrained", device="cpu", compile=True)
    assert maxdiff(failing.stylize(frame_a, feats_ab, [1, 0]), eager) <= 1
    assert failing.acceleration == "eager (compile failed: RuntimeError: no C compiler found)"


def test_winograd_engine_renders_as_the_direct_one(engine, feats_ab, two_styles, frame_a, monkeypatch):
    """fp32 CPU engines take NNPACK's Winograd convolutions where `winograd_preferred` says so;
    $VST_WINOGRAD=1 takes them wherever PyTorch has NNPACK, 0 keeps oneDNN's direct ones. Both give the
    same features and frames (within a grey level)."""
    from vst_engine.convs import winograd_available, winograd_preferred
    from vst_engine.engine import Engine

    assert engine.winograd == winograd_preferred()
    assert engine.layout == (torch.contiguous_format if engine.winograd else torch.channels_last)
    if not winograd_available():
        pytest.skip("this PyTorch build has no NNPACK")
    monkeypatch.setenv("VST_WINOGRAD", "1")
    winograd = Engine(model="untrained", device="cpu")
    assert winograd.winograd and winograd.layout == torch.contiguous_format
    assert winograd.acceleration == "eager + Winograd convolutions (NNPACK)"
    monkeypatch.setenv("VST_WINOGRAD", "0")
    direct = Engine(model="untrained", device="cpu")
    assert not direct.winograd and direct.layout == torch.channels_last and direct.acceleration == "eager"
    feats = direct.analyze([frame_a], two_styles, interval=1, sampled=[0], frame_range=(0, 1))
    feats_winograd = winograd.analyze([frame_a], two_styles, interval=1, sampled=[0], frame_range=(0, 1))
    for mine, ref in zip([*feats.norm_mean, *feats.norm_std, *feats.content_desc],
                         [*feats_winograd.norm_mean, *feats_winograd.norm_std, *feats_winograd.content_desc]):
        assert torch.allclose(mine, ref, rtol=1e-3, atol=1e-4)
    assert maxdiff(direct.stylize(frame_a, feats_ab, [1, 0]), winograd.stylize(frame_a, feats_ab, [1, 0])) <= 1


def test_winograd_is_preferred_on_cpus_without_avx512(monkeypatch):
    """NNPACK (AVX2 kernels at most) for fp32 where ATen runs without AVX-512, oneDNN's direct
    convolutions where it runs with; $VST_WINOGRAD decides where set; never without NNPACK."""
    from vst_engine import convs
    from vst_engine.hardware import cpu_has_avx512

    monkeypatch.setattr(convs, "winograd_available", lambda: True)
    monkeypatch.delenv("VST_WINOGRAD", raising=False)
    for capability, preferred in (("AVX2", True), ("AVX512", False), ("DEFAULT", True)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert cpu_has_avx512() is (capability == "AVX512")
        assert convs.winograd_preferred() is preferred
        monkeypatch.setenv("VST_WINOGRAD", "1")
        assert convs.winograd_preferred() is True
        monkeypatch.delenv("VST_WINOGRAD")
    monkeypatch.setattr(convs, "winograd_available", lambda: False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert convs.winograd_preferred() is False


def test_full_strength_analysis_skips_the_own_colours(engine, two_styles, feats_ab, frame_a, frame_b, tmp_path):
    """Features analysed without the clip's own colours render full strength exactly as complete
    features do, refuse a lower strength with a clear error, and keep that through a file."""
    lean = engine.analyze([frame_a, frame_b], two_styles, interval=1, sampled=[0, 1], frame_range=(0, 2),
                          own_colours=False)
    assert not lean.has_own_colours and feats_ab.has_own_colours
    for weights in ([1, 0], [0.3, 0.7]):
        assert np.array_equal(engine.stylize(frame_b, lean, weights), engine.stylize(frame_b, feats_ab, weights))
    lean.save(tmp_path / "lean.vstf")
    loaded = GlobalFeatures.load(tmp_path / "lean.vstf")
    with pytest.raises(VstError, match="analysed for full strength only"):
        engine.stylize(frame_b, loaded, [1, 0], strength=0.5)
    assert all(torch.isfinite(t).all() for t in [*loaded.norm_mean, *loaded.norm_std, *loaded.norm_min,
                                                 *loaded.norm_max])


def _tensors(feats: GlobalFeatures) -> list[torch.Tensor]:
    return [*feats.norm_mean, *feats.norm_std, *feats.norm_min, *feats.norm_max, *feats.content_desc,
            *feats.style.tensors()]


def test_own_colours_come_from_every_second_analysed_frame(engine, two_styles, feats_ab, frame_a, frame_b):
    """The clip's own colours (slot 0) are rendered on analysed frames 0, 2, 4...: over frames a, b
    their statistics are frame a's alone, while the styles' statistics cover both frames."""
    assert engine_mod.OWN_COLOUR_EVERY == 2
    only_a = engine.analyze([frame_a], two_styles, interval=1, sampled=[0], frame_range=(0, 1))
    both_lean = engine.analyze([frame_a, frame_b], two_styles, interval=1, sampled=[0, 1], frame_range=(0, 2),
                               own_colours=False)
    differ = []
    for stats in ("norm_mean", "norm_std", "norm_min", "norm_max"):
        for mine, a, lean in zip(getattr(feats_ab, stats), getattr(only_a, stats), getattr(both_lean, stats)):
            assert torch.allclose(mine[0], a[0], rtol=1e-5, atol=1e-6)
            assert torch.allclose(mine[1:], lean[1:], rtol=1e-5, atol=1e-6)
            differ.append(not torch.allclose(mine[1:], a[1:], rtol=1e-3, atol=1e-3))
    assert sum(differ) > len(differ) // 2  # frame b counts in the styles' statistics
    for mine, a in zip(feats_ab.style.tensors(), only_a.style.tensors()):
        assert torch.allclose(mine[0], a[0], rtol=1e-5, atol=1e-6)
    # Frame b's own colours are never computed, so a third frame's are: a, b, c -> a and c.
    calls = []
    real = engine._own_colours
    engine._own_colours = lambda tile: calls.append(tile.shape) or real(tile)
    try:
        engine.analyze([frame_a, frame_b, frame_a], two_styles, interval=1, sampled=[0, 1, 2], frame_range=(0, 3))
    finally:
        del engine._own_colours
    assert len(calls) == 2


def test_own_colour_analysis_completes_lean_features(engine, two_styles, feats_ab, frame_a, frame_b, make_frame):
    """Adding the own colours to full-strength-only features gives the complete analysis (every
    statistic, and so every strength), analysing only the skipped slot; other frames are refused."""
    flat = np.full_like(frame_a, 40)  # skipped by both passes alike
    lean = engine.analyze([frame_a, flat, frame_b], two_styles, interval=1, sampled=[0, 1, 2], frame_range=(0, 3),
                          own_colours=False)
    complete = engine.analyze([frame_a, flat, frame_b], two_styles, interval=1, sampled=[0, 1, 2],
                              frame_range=(0, 3))
    run = engine.own_colour_analysis(lean, two_styles)
    assert run.styled == 0 and run.own_colours  # renders slot 0 alone
    for f in (frame_a, flat, frame_b):
        run.add(f)
    done = run.finish()
    assert done.has_own_colours and not lean.has_own_colours
    assert (done.sampled, done.frame_range, done.extra) == (complete.sampled, complete.frame_range, complete.extra)
    for mine, ref in zip(_tensors(done), _tensors(complete), strict=True):
        assert torch.allclose(mine, ref, rtol=1e-5, atol=1e-6)
    assert np.array_equal(engine.stylize(frame_b, done, [0.3, 0.7], strength=0.4),
                          engine.stylize(frame_b, complete, [0.3, 0.7], strength=0.4))
    # Other frames than the lean analysis saw, complete features, or other styles: refused.
    other = engine.own_colour_analysis(lean, two_styles)
    other.add(frame_a)
    with pytest.raises(VstError, match="not the ones the global features were analysed from"):
        other.finish()
    with pytest.raises(VstError, match="already include the clip's own colours"):
        engine.own_colour_analysis(feats_ab, two_styles)
    swapped = StyleSet(two_styles.refs[::-1], two_styles.targets)
    with pytest.raises(VstError, match="other styles"):
        engine.own_colour_analysis(lean, swapped)


def test_batched_analysis_equals_frame_by_frame(engine, two_styles, frame_a, make_frame):
    """Frames analysed three a pass (as a GPU does at small sizes) give the features of one frame a
    pass: seven textured frames and a flat one make batches of 3, 3 and a padded 1, and the own
    colours come from the same frames (0, 2, 4, 6: rows 0 and 2, then 1, then 0). The frames are
    fed through one reused buffer, as a decoder may hand them over. Completing full-strength
    features in batches gives the same as well."""
    frames = [make_frame(5 * i) for i in range(4)] + [np.full_like(frame_a, 40)] + \
        [np.ascontiguousarray(255 - make_frame(7 * i)[::-1]) for i in range(1, 4)]

    def analysed(batch: int, own_colours: bool = True, lean: GlobalFeatures | None = None,
                 calls: list | None = None) -> GlobalFeatures:
        run = engine.analysis(two_styles, own_colours, batch=batch) if lean is None else \
            engine.own_colour_analysis(lean, two_styles, batch=batch)
        if calls is not None:
            real = engine._own_colours
            engine._own_colours = lambda tile: calls.append(tile.shape[0]) or real(tile)
        buffer = np.empty_like(frame_a)
        try:
            for f in frames:
                buffer[:] = f
                run.add(buffer)
            return run.finish(interval=1)
        finally:
            engine.__dict__.pop("_own_colours", None)

    calls: list[int] = []
    single, batched = analysed(1), analysed(3, calls=calls)
    assert calls == [2, 1, 2]  # own-colour rows a batch; the last, padded to 3 rows, counts its row 0 only
    assert batched.extra == single.extra == {"frames_analysed": 7, "flat_frames_skipped": 1, "own_colours": True}
    for mine, ref in zip(_tensors(batched), _tensors(single), strict=True):
        assert torch.allclose(mine, ref, rtol=1e-4, atol=1e-5)
    lean = analysed(3, own_colours=False)
    completed = analysed(3, lean=lean)
    for mine, ref in zip(_tensors(completed), _tensors(single), strict=True):
        assert torch.allclose(mine, ref, rtol=1e-4, atol=1e-5)
    assert maxdiff(engine.stylize(frame_a, completed, [0.3, 0.7], strength=0.4),
                   engine.stylize(frame_a, single, [0.3, 0.7], strength=0.4)) <= 1


def test_analysis_batches_keep_the_own_colours_on_the_same_rows(engine, monkeypatch):
    """Analysed with the clip's own colours, a batch is a multiple of OWN_COLOUR_EVERY (2): batches of
    3 would alternate rows 0, 2 and row 1, two compiled passes."""
    assert engine.analysis_batch(640, 360, True) == engine.auto_batch(640, 360) == 1  # a CPU
    for auto, own, lean in ((1, 1, 1), (2, 2, 2), (3, 2, 3), (4, 4, 4)):
        monkeypatch.setattr(engine, "auto_batch", lambda w, h, n=auto: n)
        assert (engine.analysis_batch(640, 360, True), engine.analysis_batch(640, 360, False)) == (own, lean)


def test_frames_styles_and_tiles_below_two_pooling_cells(engine, two_styles, make_frame, small_tiles, tmp_path):
    # Padded sides under 16 px left relu4_1 maps of one pixel, which a reflection border cannot
    # take: such frames failed, and such analysis tiles read uninitialised memory.
    for w, h in ((7, 5), (1, 1), (3, 12)):
        frame = make_frame(1, w, h)
        feats = engine.analyze([frame, make_frame(2, w, h)], two_styles)
        assert all(torch.isfinite(t).all() for t in feats.norm_mean + feats.norm_std + feats.content_desc)
        for out in (engine.stylize(frame, feats, strength=0.5), engine.stylize(frame, two_styles, strength=0.5)):
            assert out.shape == (h, w, 3) and out.dtype == np.uint8
    tiny_style = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny_style), np.array([[[0, 0, 255], [255, 0, 0]], [[0, 255, 0], [9, 9, 9]]], np.uint8))
    assert engine.stylize(make_frame(1), engine.load_styles([tiny_style])).shape == (48, 64, 3)

    # A frame whose analysis partition ends in a 4-px column of tiles.
    frame = make_frame(4, TILE + 4, 40)
    whole, tiled, ref, style_gap = analysed_whole_and_tiled(engine, two_styles, frame, small_tiles)
    for a, b in zip(whole.norm_mean + whole.norm_std, tiled.norm_mean + tiled.norm_std):
        assert torch.isfinite(b).all() and float((a - b).abs().max()) < 0.5 * float(a.abs().max()) + 0.5
    small_tiles(False)
    assert mad(engine.stylize(frame, tiled), ref) < 0.3 * style_gap
