"""The lite architecture: its model files, the engine's global features with it, and its distillation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vst_engine import Engine, VstError
from vst_engine.models import load_model, save_model
from vst_engine.network import StyleNet, StyleTargets
from vst_engine.train.loop import Trainer

from test_train_loop import _config, _tiny_data


def _seeded(arch: str) -> StyleNet:
    torch.manual_seed(1)
    return StyleNet(arch).eval()


@pytest.fixture(scope="module")
def lite_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("lite") / "lite_test.pt"
    save_model(_seeded("lite"), path, {"note": "test"})
    return path


@pytest.fixture(scope="module")
def lite_engine(lite_file):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield Engine(model=str(lite_file), device="cpu")
    finally:
        torch.set_num_threads(threads)


def test_paper_network_keeps_its_parameters_and_lite_is_smaller():
    paper, lite = StyleNet("paper"), StyleNet("lite")
    assert sum(p.numel() for p in paper.parameters()) == 4_667_747  # the paper's 4.67 M
    assert paper.encoder is None and paper.squeeze is None and paper.style_proj is None
    assert not any(k.startswith(("encoder.", "squeeze.", "style_proj.")) for k in paper.state_dict())
    assert lite.encoder is not None and sum(p.numel() for p in lite.parameters()) < 3_500_000
    with pytest.raises(ValueError, match="unknown architecture"):
        StyleNet("huge")


def test_lite_content_and_output_shapes():
    net = _seeded("lite")
    grey = torch.rand(2, 1, 48, 64).expand(-1, 3, -1, -1)
    style = StyleTargets([torch.rand(2, c) for c in (64, 128, 256, 512)],
                         [torch.rand(2, c) + 0.5 for c in (64, 128, 256, 512)], [torch.rand(2, 32)] * 6)
    with torch.no_grad():
        feat = net.content(grey, vgg=None)  # its own encoder: VGG is not needed
        out = net(feat, style)
        mean, std = net.style_proj[2](style.mean[0], style.std[0])
    assert feat.shape == (2, 512, 6, 8) and float(feat.min()) >= 0.0
    assert out.shape == (2, 3, 48, 64) and torch.isfinite(out).all()
    assert mean.shape == std.shape == (2, 32) and float(std.min()) > 0.0


def test_lite_model_file_round_trip_and_bad_architecture(lite_file, tmp_path):
    model = load_model(str(lite_file))
    assert model.net.arch == "lite" and model.meta["arch"] == "lite" and model.trained
    reference = _seeded("lite").state_dict()
    for k, v in model.net.state_dict().items():
        assert torch.allclose(v, reference[k].half().float()), k
    blob = torch.load(lite_file, weights_only=True)
    blob["meta"]["arch"] = "huge"
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(VstError, match="unknown architecture 'huge'"):
        load_model(str(tmp_path / "bad.pt"))
    blob["meta"]["arch"] = "paper"  # lite weights declared as the paper network's
    torch.save(blob, tmp_path / "mismatch.pt")
    with pytest.raises(VstError, match="does not match"):
        load_model(str(tmp_path / "mismatch.pt"))


def test_lite_engine_runs_on_onednn_in_channels_last(lite_engine):
    assert not lite_engine.winograd and lite_engine.layout == torch.channels_last
    assert "Winograd" not in lite_engine.acceleration


def equal_but_rounding(x: np.ndarray, y: np.ndarray) -> bool:
    """Equal within float rounding, which this untrained network's high gain (85% of its output
    values clipped to 0 or 1) magnifies at a few pixels: between local and shared statistics of one
    frame, measured mean 0.08-0.09 grey levels, 2.5-3.3% of the values more than 1 level apart, at most 6."""
    diff = np.abs(x.astype(int) - y)
    return diff.mean() < 0.25 and (diff > 1).mean() < 0.06 and diff.max() <= 12


def test_lite_global_features_equal_local_mode_for_one_frame(lite_engine, style_paths, make_frame):
    styles = lite_engine.load_styles([style_paths["stripes"], style_paths["checker"]])
    a, b = make_frame(0), np.ascontiguousarray(255 - make_frame(20)[::-1])
    one = lite_engine.analyze([a], styles, interval=1, sampled=[0])
    for weights in ([1, 0], [0, 1]):
        local = lite_engine.stylize(a, styles, weights)
        shared = lite_engine.stylize(a, one, weights)
        assert equal_but_rounding(local, shared)
    both = lite_engine.analyze([a, b], styles, interval=1, sampled=[0, 1])
    together = lite_engine.stylize_batch([a, b], both)
    assert all(equal_but_rounding(t, lite_engine.stylize(f, both)) for t, f in zip(together, (a, b)))
    # The clip's statistics are not the frame's: sharing changes the frame.
    assert np.abs(lite_engine.stylize(a, both).astype(int) - lite_engine.stylize(a, one)).mean() > 1.0
    # Strength below 1 blends towards the clip's own colours, as with the paper network.
    assert np.abs(lite_engine.stylize(a, both, strength=0.5).astype(int) - together[0]).mean() > 1.0


def test_distillation_step_trains_the_student_and_leaves_the_teacher(tmp_path):
    torch.set_num_threads(1)
    data = _tiny_data(tmp_path / "data")
    trainer = Trainer(_config(tmp_path, data, arch="lite", teacher="untrained", pretrain_steps=1, temporal="comp",
                              teacher_pad=8))
    teacher = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    assert all(torch.equal(v, trainer.net.filters.state_dict()[k[len("filters."):]])
               for k, v in teacher.items() if k.startswith("filters."))  # the head start
    encoder = {k: v.clone() for k, v in trainer.net.encoder.state_dict().items()}
    first, second = trainer.train_step(), trainer.train_step()
    assert set(first) == {"total", "distill", "feature", "perceptual", "style"}
    assert set(second) == set(first) | {"temporal"}
    assert all(math.isfinite(v) for v in second.values()) and second["distill"] > 0
    assert all(torch.equal(v, trainer.teacher.state_dict()[k]) for k, v in teacher.items())
    assert any(not torch.equal(v, trainer.net.encoder.state_dict()[k]) for k, v in encoder.items())
    trainer.export(tmp_path / "student.pt")
    assert load_model(str(tmp_path / "student.pt")).net.arch == "lite"


def test_the_teacher_renders_a_widened_crop(tmp_path):
    """teacher_pad: the teacher's frame is its render of the crop widened by reflected columns, cut
    back to the crop (the untrained network's normalization sees the wider frame: every pixel changes)."""
    import torch.nn.functional as F
    from vst_engine.imageops import desaturate
    torch.set_num_threads(1)
    trainer = Trainer(_config(tmp_path, _tiny_data(tmp_path / "data"), arch="lite", teacher="untrained",
                              teacher_pad=16, crop=48, final_crop=48))
    colour = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    grey = desaturate(colour)
    with torch.no_grad():
        targets = trainer.teacher.style_targets(trainer.vgg(colour))
        c4 = trainer.vgg.relu4_1(grey)
        frame = trainer._teacher_frame(grey, c4, targets)
        wide = trainer.teacher(trainer.vgg.relu4_1(F.pad(grey, (16, 16, 0, 0), mode="reflect")), targets)
        plain = trainer.teacher(c4, targets)
    assert frame.shape == colour.shape and torch.equal(frame, wide[..., 16:-16])
    assert (frame - plain).abs().mean() > 1e-3


def test_distillation_settings_are_checked(tmp_path):
    from vst_engine.train.loop import TrainConfig
    with pytest.raises(ValueError, match="arch='huge'"):
        TrainConfig(data="d", out="o", arch="huge")
    with pytest.raises(ValueError, match="w_distill=-1"):
        TrainConfig(data="d", out="o", w_distill=-1.0)
    with pytest.raises(ValueError, match="w_distill_style=-2"):
        TrainConfig(data="d", out="o", w_distill_style=-2.0)
    with pytest.raises(ValueError, match="teacher_pad=12"):
        TrainConfig(data="d", out="o", teacher="default", teacher_pad=12)
    with pytest.raises(ValueError, match="teacher_pad=128"):
        TrainConfig(data="d", out="o", teacher="default", teacher_pad=128)


def test_shipped_lite_weights_are_the_distilled_lite_network():
    """`--model lite` is a trained lite network in half precision, distilled from the default model."""
    from vst_engine.models import model_path
    model = load_model("lite")
    assert model.trained and model.net.arch == "lite" and model.meta["arch"] == "lite"
    assert model.meta["recipe"]["teacher"] == "default" and model.meta["steps"] >= 1000
    blob = torch.load(model_path("lite"), weights_only=True)
    assert all(v.dtype == torch.float16 for v in blob["state"].values())
    assert model_path("lite").stat().st_size < 8 * 2**20
