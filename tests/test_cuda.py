"""CUDA only (skipped without a GPU): replayed CUDA graphs render what eager passes render.

The graph reads the clip statistics and style targets at fixed addresses, so these tests change
exactly what could go stale: the frame, the style weights, the batch size and the features object.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import synth_frame

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

W, H = 256, 144


@pytest.fixture(scope="module")
def engines():
    from vst_engine import Engine
    # precision "auto" (fp16), not the fp32 the other tests pin in conftest; compiled and replayed
    # (the CUDA defaults) against plain eager passes
    return (Engine(device="cuda", precision="auto"),
            Engine(device="cuda", precision="auto", cuda_graphs=False, compile=False))


@pytest.fixture(scope="module")
def clip() -> list[np.ndarray]:
    return [synth_frame(t, W, H) for t in range(6)]


@pytest.fixture(scope="module")
def features(engines, clip, style_paths):
    _, eager = engines
    styles = eager.load_styles([style_paths["stripes"], style_paths["dots"]])
    return [eager.analyze(frames, styles) for frames in (clip[:3], clip[3:])]


def test_compiled_analysis_equals_eager(engines, clip, style_paths, features):
    graphed, _ = engines
    feats = graphed.analyze(clip[:3], graphed.load_styles([style_paths["stripes"], style_paths["dots"]]))
    close_features(feats, features[0])
    assert graphed.acceleration == "compiled + CUDA graphs"
    assert {shape[0] for shape, _ in graphed.analysis_graphs.keys()} == {4}  # three frames, a padded batch


def test_small_frames_are_analysed_in_batches(engines, clip, style_paths, features):
    """At small sizes the analysis takes four frames a pass, as the stylization does (one frame a pass
    left a GPU idle between launches): the features of a frame a pass."""
    _, eager = engines
    assert eager.auto_batch(W, H) == 4
    run = eager.analysis(eager.load_styles([style_paths["stripes"], style_paths["dots"]]), batch=1)
    for frame in clip[:3]:
        run.add(frame)
    close_features(run.finish(), features[0])


def close_features(feats, ref) -> None:
    """Half-precision features against eager ones: within 2% of each statistic's largest value."""
    for kind in ("norm_mean", "norm_std", "norm_min", "norm_max", "content_desc"):
        for mine, theirs in zip(getattr(feats, kind), getattr(ref, kind), strict=True):
            scale = theirs.abs().max().clamp_min(1e-3)
            assert float((mine - theirs).abs().max() / scale) < 0.02, kind


def close(a: np.ndarray, b: np.ndarray) -> None:
    """Compiled kernels keep fused intermediates in float32 where eager passes round each to fp16:
    small differences, unlike stale statistics (whole-image shifts)."""
    d = np.abs(a.astype(int) - b.astype(int))
    assert a.shape == b.shape and d.mean() <= 0.5 and d.max() <= 16, (d.mean(), d.max())


def test_replayed_frames_equal_eager_frames(engines, clip, features):
    graphed, eager = engines
    for frame in clip[:3]:
        close(graphed.stylize(frame, features[0], [1, 0]), eager.stylize(frame, features[0], [1, 0]))
    assert graphed.acceleration == "compiled + CUDA graphs" and len(graphed.graphs.keys()) == 1
    assert eager.acceleration == "eager" and graphed.precision == "fp16"


def test_replay_follows_new_weights_batches_and_features(engines, clip, features):
    graphed, eager = engines
    for weights, strength in (([0, 1], 1.0), ([0.3, 0.7], 0.6), ([1, 0], 1.0)):
        close(graphed.stylize(clip[1], features[0], weights, strength),
              eager.stylize(clip[1], features[0], weights, strength))
    for frames in (clip[:4], clip[1:3]):  # the short batch is padded to the captured one
        for a, b in zip(graphed.stylize_batch(frames, features[0], [0.5, 0.5]),
                        eager.stylize_batch(frames, features[0], [0.5, 0.5]), strict=True):
            close(a, b)
    assert sorted(k[0][0] for k in graphed.graphs.keys()) == [1, 4]
    close(graphed.stylize(clip[4], features[1], [1, 0]), eager.stylize(clip[4], features[1], [1, 0]))
    assert graphed.acceleration == "compiled + CUDA graphs"
    differs = graphed.stylize(clip[4], features[0], [1, 0]).astype(int) - graphed.stylize(clip[4], features[1], [1, 0])
    assert np.abs(differs).mean() > 0.5  # the two clips' features really differ


def test_submitted_frames_arrive_intact(engines, clip, features):
    """Frames submitted back to back, none waited for, come back as the frames stylized one at a time:
    their copies run on streams of their own, and a missing wait would hand back a stale or torn frame."""
    graphed, _ = engines
    expected = [graphed.stylize(f, features[0], [1, 0]) for f in clip]
    pending = [graphed.submit([f], features[0], [1, 0]) for f in clip]
    for got, want in zip([p.result()[0] for p in pending], expected, strict=True):
        assert np.abs(got.astype(int) - want).max() <= 1
    floats = graphed.submit(clip[:1], features[0], [1, 0], as_float=True).result()[0]
    assert floats.dtype == np.float32 and np.abs(floats * 255 - expected[0]).max() <= 1.5


def test_auto_batch_fits_the_gpu(engines):
    graphed, _ = engines
    assert 1 <= graphed.auto_batch(1920, 1080) <= 4
    assert graphed.auto_batch(7680, 4320) == 1  # tiled: one frame at a time


def test_phase_convolution_equals_the_upsampled_one_on_cuda(monkeypatch):
    """CUDA inference runs upsampled convolutions as 2x2 phase convolutions (VST_PHASE_CONV=0: not)."""
    import torch.nn.functional as F

    from vst_engine.network import ReflectConv3x3
    torch.manual_seed(5)
    conv = ReflectConv3x3(128, 64).cuda().to(memory_format=torch.channels_last)
    x = torch.randn(2, 128, 17, 30, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        out = conv.forward_upsampled(x)
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert float((out - ref).abs().max()) <= 1e-3 * float(ref.abs().max())
        monkeypatch.setenv("VST_PHASE_CONV", "0")
        assert torch.equal(conv.forward_upsampled(x), ref)


def test_fused_normalization_takes_channels_last_maps():
    """The eager half-precision normalization (CUDA's fallback when compiling fails, and every eager
    test engine here) of the channels-last maps the networks make: the group norm it calls reads only
    contiguous maps on CUDA."""
    from vst_engine.norms import channel_stats, fused_normalize
    torch.manual_seed(3)
    x = (torch.randn(2, 64, 20, 36, device="cuda") * 3 + 1).half().contiguous(memory_format=torch.channels_last)
    y, mean, std = fused_normalize(x)
    ref_mean, ref_std = channel_stats(x.float())
    assert y.is_contiguous(memory_format=torch.channels_last) and y.dtype == torch.float16
    assert torch.allclose(mean, ref_mean, atol=5e-3) and torch.allclose(std, ref_std, rtol=5e-3)
    ref = (x.float() - ref_mean[..., None, None]) / ref_std[..., None, None]
    assert float((y.float() - ref).abs().max()) < 0.02


def test_tiles_are_compiled_and_replayed(monkeypatch, clip, style_paths):
    """A frame above the tile area renders tile by tile through one compiled, replayed graph (the tiles
    share a shape), as the eager tiles do."""
    import vst_engine.engine as engine_mod
    from vst_engine import Engine
    from vst_engine.tiling import tile_windows
    monkeypatch.setattr(engine_mod, "TILE_SIZE", 64)
    monkeypatch.setattr(engine_mod, "TILE_OVERLAP", 32)
    graphed = Engine(device="cuda", precision="auto", tile_area=32 * 32)
    eager = Engine(device="cuda", precision="auto", tile_area=32 * 32, cuda_graphs=False, compile=False)
    feats = eager.analyze(clip[:2], eager.load_styles([style_paths["stripes"]]))
    assert graphed._tile_side() == 64 and len(tile_windows(H, W, 64, 32, 8)) > 4
    for frame in clip[:2]:
        close(graphed.stylize(frame, feats), eager.stylize(frame, feats))
    (shape, _), = graphed.graphs.keys()
    assert shape[0] == 1 and shape[2:] != (H, W)
    assert graphed.acceleration == "compiled + CUDA graphs"


def test_uncompiled_passes_replay_from_graphs(engines, clip, style_paths, features):
    """What short `vst stylize` renders run on CUDA: uncompiled passes, analysis and stylization
    replayed from graphs, as plain eager passes render them."""
    from vst_engine import Engine
    _, eager = engines
    replayed = Engine(device="cuda", precision="auto", compile=False)
    feats = replayed.analyze(clip[:3], replayed.load_styles([style_paths["stripes"], style_paths["dots"]]))
    assert replayed.analysis_graphs.keys()
    close_features(feats, features[0])
    for frame in clip[:2]:
        close(replayed.stylize(frame, features[0], [1, 0]), eager.stylize(frame, features[0], [1, 0]))
    assert replayed.acceleration == "eager + CUDA graphs"
