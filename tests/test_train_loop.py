"""The training loop on a tiny data set: the portable bundle, the time limit and the temporal term."""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vst_engine.train import bundle
from vst_engine.train.loop import Trainer, TrainConfig


def _tiny_data(root: Path) -> Path:
    rng = np.random.default_rng(0)
    # Smooth images (JPEG keeps them within a few grey levels), not noise.
    base = np.stack([cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (72, 72),
                                interpolation=cv2.INTER_LINEAR) for _ in range(5)])
    root.mkdir()
    np.save(root / "content_train.npy", base[:4])
    np.save(root / "content_heldout.npy", base[4:])
    for folder, count in (("styles_train", 2), ("styles_heldout", 1)):
        (root / folder).mkdir()
        for i in range(count):
            img = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (80, 64), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(root / folder / f"{i:03d}_style.png"), img)
    (root / "MANIFEST.md").write_text("# test data\n")
    return root


def test_bundle_round_trip(tmp_path):
    data = _tiny_data(tmp_path / "data")
    size = bundle.bundle(data, tmp_path / "data.tar")
    assert size == (tmp_path / "data.tar").stat().st_size and not list(tmp_path.glob("*.partial"))
    counts = bundle.unbundle(tmp_path / "data.tar", tmp_path / "copy")
    assert counts == {"content_train": 4, "content_heldout": 1, "styles_train": 2, "styles_heldout": 1}
    for name in ("content_train", "content_heldout"):
        a, b = np.load(data / f"{name}.npy"), np.load(tmp_path / "copy" / f"{name}.npy")
        assert a.shape == b.shape and b.dtype == np.uint8
        assert np.abs(a.astype(int) - b).mean() < 3.0  # JPEG quality 85 (with chroma subsampling)
    style = cv2.imread(str(tmp_path / "copy" / "styles_train" / "000_style.jpg"))
    assert style.shape == (64, 80, 3)
    assert (tmp_path / "copy" / "MANIFEST.md").read_text() == "# test data\n"


def _config(tmp_path: Path, data: Path, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(tmp_path / "run"), steps=10, pretrain_steps=10, batch=2, crop=32,
                final_crop=32, style_bank_augs=1, log_every=1, ckpt_every=100, sample_every=1000, bf16=False)
    base.update(kw)
    return TrainConfig(**base)


def test_time_limit_checkpoints_and_resumes(tmp_path):
    torch.set_num_threads(1)
    data = _tiny_data(tmp_path / "data")
    trainer = Trainer(_config(tmp_path, data))
    trainer.run(until=2)
    assert trainer.step == 2
    again = Trainer(_config(tmp_path, data))
    assert again.step == 2  # resumed from the checkpoint of step 2
    again.run(max_seconds=0)  # the limit has passed before the first step: stop, checkpointed
    assert again.step == 2
    ck = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert ck["step"] == 2
    lines = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]


def test_compound_term_is_on_after_pretraining(tmp_path):
    torch.set_num_threads(1)
    data = _tiny_data(tmp_path / "data")
    trainer = Trainer(_config(tmp_path, data, pretrain_steps=1, temporal="comp"))
    first, second = trainer.train_step(), trainer.train_step()
    assert "temporal" not in first  # logged from the step it is on
    assert math.isfinite(second["temporal"]) and second["temporal"] > 0.0
    assert all(math.isfinite(v) for v in second.values())


def test_mirrored_items_ask_for_the_mirrored_frame(tmp_path):
    """With flip_prob the temporal term compares the frame of the mirrored input with the mirrored
    frame (no noise here): zero for an unmirrored copy, the network's flip error for a mirrored one."""
    from vst_engine.imageops import desaturate
    torch.set_num_threads(1)
    data = _tiny_data(tmp_path / "data")
    colour = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    losses = {}
    for prob in (0.0, 1.0):
        trainer = Trainer(_config(tmp_path / str(prob), data, temporal="noise", noise_var=(0.0, 0.0), flip_prob=prob))
        net, vgg = trainer.net, trainer.vgg
        with torch.no_grad():
            targets = net.style_targets(vgg(colour)).map(lambda t: t.detach())
            render = lambda x: net(net.content(desaturate(x), vgg), targets)
            out = render(colour)
            losses[prob] = float(trainer._temporal(colour, out, targets, torch.Generator().manual_seed(0)))
            mirrored = float((render(colour.flip(-1)) - out.flip(-1)).abs().mean())
    assert losses[0.0] < 1e-6
    assert losses[1.0] == pytest.approx(mirrored, rel=1e-4) and mirrored > 1e-3


def test_bad_settings_are_refused_before_anything_is_written(tmp_path, capsys):
    from vst_engine.train.__main__ import main
    for bad, word in ((dict(steps=-1), "steps=-1"), (dict(lr=0.0), "lr=0.0"), (dict(temporal="flow"), "temporal='flow'"),
                      (dict(ema=1.0), "ema=1.0"), (dict(w_style=float("nan")), "w_style=nan"),
                      (dict(flip_prob=1.5), "flip_prob=1.5")):
        with pytest.raises(ValueError, match=word):
            TrainConfig(data="d", out="o", **bad)
    with pytest.raises(SystemExit) as exc:
        main(["run", "--out", str(tmp_path / "run"), "--steps", "0", "--batch", "0"])
    assert exc.value.code == 2
    assert "invalid training settings: steps=0, batch=0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
