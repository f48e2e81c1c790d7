"""The ablation's variant recipes and the gallery's layout (the runs themselves are long jobs)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vst_engine.train.ablation import INTERVALS, VARIANTS, report, variant_config, variant_name
from vst_engine.train.gallery import compose
from vst_engine.models import save_model
from vst_engine.network import StyleNet
from vst_engine.train.loop import TEMPORAL_MODES, TrainConfig, load_checkpoint


def test_variants_differ_only_in_the_temporal_term(tmp_path):
    base = TrainConfig(data="d", out="runs/default", steps=6000, pretrain_steps=4000, w_temporal=60.0)
    names = [variant_name(m, w) for m, w in VARIANTS]
    assert len(set(names)) == len(names) and "none" in names and "comp_w60" in names
    assert {m for m, _ in VARIANTS} == set(TEMPORAL_MODES)
    cfgs = [variant_config(base, m, w, tmp_path / "ckpt_pretrain.pt", 4000, 200, tmp_path / "abl") for m, w in VARIANTS]
    for cfg, (mode, weight) in zip(cfgs, VARIANTS):
        assert (cfg.temporal, cfg.w_temporal) == (mode, weight)
        assert cfg.pretrain_steps == 0 and cfg.steps == 4200 and cfg.extra == {"init_step": 4000}
        assert cfg.flip_prob == 0.0 and base.flip_prob == 0.5  # the paper's terms alone
        assert Path(cfg.out) == tmp_path / "abl" / variant_name(mode, weight)
        # Everything else is the base recipe.
        same = ("batch", "crop", "lr", "lr_decay", "w_content", "w_style", "w_recon", "w_tv", "seed", "noise_var")
        assert all(getattr(cfg, k) == getattr(base, k) for k in same)


def test_a_model_file_is_a_branch_point(tmp_path):
    """The ablation (and any run's --init) can start from committed half-precision weights: their
    weights as network and average, their step count as the branch point's step."""
    net = StyleNet()
    save_model(net, tmp_path / "baseline.pt", {"steps": 14117})
    ck = load_checkpoint(tmp_path / "baseline.pt")
    assert ck["step"] == 14117 and "opt" not in ck
    for key in ("net", "ema"):
        assert ck[key].keys() == net.state_dict().keys()
        w, ref = ck[key]["to_rgb.weight"], net.state_dict()["to_rgb.weight"]
        assert w.dtype == torch.float32 and torch.allclose(w, ref, atol=1e-3 * float(ref.abs().max()))


def test_ablation_report(tmp_path):
    """The table has a row per variant with its figures; the JSON keeps them; the plot (where
    matplotlib is installed) shows the short and the long interval side by side."""
    import importlib.util
    import json

    import cv2
    results = [{"name": variant_name(m, w), "mode": m, "weight": w, "step": 300,
                "temporal": {str(i): 0.04 + 0.001 * i + k * 1e-4 for i in INTERVALS},
                "style_loss": 0.6 + 0.05 * k, "style_loss_ratio": 0.2, "content_loss": 1.2 - 0.01 * k}
               for k, (m, w) in enumerate(VARIANTS)]
    report(results, {"branch point": "baseline.pt", "fine-tune steps": 300}, tmp_path)
    md = (tmp_path / "ablation.md").read_text()
    assert "branch point baseline.pt" in md and md.count("\n| ") == len(VARIANTS) + 1
    assert "| comp | 60 | 0.0416 |" in md and "| 0.900 | 0.200 | 1.140 |" in md
    assert json.loads((tmp_path / "ablation.json").read_text())["results"] == results
    if importlib.util.find_spec("matplotlib") is None:
        assert not (tmp_path / "ablation.png").exists()
    else:
        h, w = cv2.imread(str(tmp_path / "ablation.png")).shape[:2]
        assert w > 2 * h  # two panels: i = 1 and i = 16


def test_gallery_grid_layout():
    wide = np.zeros((90, 160, 3), np.uint8)
    tall = np.full((300, 100, 3), 128, np.uint8)
    grid = compose([[(wide, "a"), (tall, "b"), (wide, "c")], [(tall, "d"), (wide, "e"), (tall, "f")]])
    cell_h, cell_w = 135 + 22, 240
    assert grid.shape == (2 * cell_h + 4, 3 * cell_w + 2 * 4, 3)
    # The wide image fills its cell's width; the tall one is centred with white around it.
    assert (grid[:135, :240] == 0).all()
    assert (grid[:135, 244:244 + 40] == 255).all() and (grid[60, 244 + 120] == 128).all()
