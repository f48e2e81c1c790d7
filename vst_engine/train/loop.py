"""Training with the paper's losses and compound regularization; resumable and seeded.

Recipe for a 2-core CPU (also runs on CUDA): bf16 autocast and channels-last where the hardware
has fast bf16 (CUDA, or a CPU with AMX), a cached bank of
augmented style crops (their VGG statistics are computed once), content crops from a
precomputed array. Each batch's first item is a colour-reconstruction item (its own colour
statistics as the style), the rest are stylization items. After `pretrain_steps` the temporal
term is switched on: the batch is rendered again from a warped, noisy copy of its input.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..hardware import cpu_has_amx, reuse_large_allocations
from ..imageops import desaturate
from ..atomic import atomic_write_bytes
from ..models import load_model, save_model
from ..network import ARCHS, StyleNet, StyleTargets
from ..norms import channel_stats
from ..vgg import VGGEncoder
from . import losses
from .warp import random_flow, warp

TEMPORAL_MODES = ("none", "noise", "motion", "comp")


@dataclass
class TrainConfig:
    data: str
    out: str
    steps: int = 11000
    pretrain_steps: int = 10000  # no temporal term before this step (the paper's schedule, shortened for CPUs)
    batch: int = 4
    crop: int = 128
    final_crop: int = 128
    final_crop_from: int = 10000  # switch to the final crop size at this step
    lr: float = 1e-4
    lr_decay: float = 5e-5  # lr / (1 + decay * step)
    ema: float = 0.999
    w_content: float = 3.0  # 1 / 20 / 10 (content / style / TV) until step 1,800: content was lost
    w_style: float = 5.0
    w_recon: float = 20.0
    w_tv: float = 1.0
    temporal: str = "comp"
    w_temporal: float = 60.0
    noise_var: tuple[float, float] = (0.01, 0.02)  # the paper's sigma^2 ~ U(0.01, 0.02)
    # Share of the temporal term's items that are also mirrored left to right. Without it the networks
    # learned to pile texture along the frame's right edge (measured: twice the flip error there).
    flip_prob: float = 0.5
    seed: int = 0
    device: str = "cpu"
    bf16: bool | None = None  # None: on CUDA and CPUs with AMX (`cpu_has_amx`)
    ckpt_every: int = 200
    log_every: int = 20
    sample_every: int = 1000
    style_bank_augs: int = 12
    init: str | None = None  # a checkpoint to start from (for fine-tuning branches)
    arch: str = "paper"  # network.ARCHS
    # Distillation: with a teacher model (name or file) the losses are its output (L1), VGG relu4_1 for
    # the network's own content encoder (MSE), the VGG taps of its output (MSE) and the paper's style
    # loss on the student's own output (w_distill_style; without it the student's frames stayed blurred).
    teacher: str | None = None
    w_distill: float = 10.0
    w_feature: float = 1.0
    w_perceptual: float = 1.0
    w_distill_style: float = 5.0
    # The teacher renders the crop widened by this many reflected pixels on each side, then cropped
    # back: the default network piles texture along its frame's right edge (gradient energy in the
    # right 32 px 2.2x the middle's; with 64 px of margin, 1.0x), which the student should not learn.
    teacher_pad: int = 64
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A bad value would otherwise train nothing, or diverge, without a word.
        counts = {k: getattr(self, k) for k in ("steps", "batch", "crop", "final_crop", "ckpt_every", "log_every",
                                                 "sample_every", "style_bank_augs")}
        bad = [f"{k}={v}" for k, v in counts.items() if v < 1]
        bad += [f"{k}={getattr(self, k)}" for k in ("pretrain_steps", "final_crop_from", "lr_decay", "w_content",
                                                    "w_style", "w_recon", "w_tv", "w_temporal", "w_distill",
                                                    "w_feature", "w_perceptual", "w_distill_style")
                if not getattr(self, k) >= 0]
        bad += [f"lr={self.lr}"] if not self.lr > 0 else []
        bad += [f"arch={self.arch!r} (one of {', '.join(ARCHS)})"] if self.arch not in ARCHS else []
        bad += [f"ema={self.ema}"] if not 0 <= self.ema < 1 else []
        bad += [f"flip_prob={self.flip_prob}"] if not 0 <= self.flip_prob <= 1 else []
        bad += [f"teacher_pad={self.teacher_pad} (a multiple of 8 below the crop)"] \
            if self.teacher and (self.teacher_pad % 8 or not 0 <= self.teacher_pad < min(self.crop, self.final_crop)) \
            else []
        bad += [f"temporal={self.temporal!r} (one of {', '.join(TEMPORAL_MODES)})"] \
            if self.temporal not in TEMPORAL_MODES else []
        if bad:
            raise ValueError("invalid training settings: " + ", ".join(bad))


def _read_rgb(path: Path, max_side: int = 512) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise RuntimeError(f"cannot read {path}")
    h, w = img.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s < 1.0:
        img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _style_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Random square crop at a random scale, random flip and mild colour jitter."""
    h, w = img.shape[:2]
    side = int(rng.uniform(0.45, 1.0) * min(h, w))
    side = max(side, min(h, w, 64))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = cv2.resize(img[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    gain = rng.uniform(0.9, 1.1, size=3)  # small per-channel gain keeps the palette recognisable
    return np.clip(crop.astype(np.float32) * gain, 0, 255).astype(np.uint8)


class StyleBank:
    """VGG statistics and normalized relu4_1 maps of augmented crops of every training style."""

    def __init__(self, mean: list[torch.Tensor], std: list[torch.Tensor], feat4: torch.Tensor, names: list[str]):
        self.mean, self.std, self.feat4, self.names = mean, std, feat4, names

    @classmethod
    def build(cls, style_dir: Path, vgg: VGGEncoder, augs: int, seed: int, size: int = 256) -> "StyleBank":
        paths = sorted(p for p in style_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not paths:
            raise RuntimeError(f"no style images in {style_dir}")
        rng = np.random.default_rng(seed)
        dev = next(vgg.parameters()).device
        means, stds, feats = [[] for _ in range(4)], [[] for _ in range(4)], []
        for p in paths:
            img = _read_rgb(p)
            crops = np.stack([_style_crop(img, size, rng) for _ in range(augs)])
            with torch.no_grad():
                taps = [t.float().cpu() for t in vgg(torch.from_numpy(crops).permute(0, 3, 1, 2).to(dev).float() / 255.0)]
            for i, t in enumerate(taps):
                m, s = channel_stats(t)
                means[i].append(m)
                stds[i].append(s)
            m4, s4 = channel_stats(taps[3])
            feats.append(((taps[3] - m4[:, :, None, None]) / s4[:, :, None, None]).half())
        return cls([torch.cat(m) for m in means], [torch.cat(s) for s in stds], torch.cat(feats),
                   [p.stem for p in paths])

    def state(self) -> dict:
        return {"mean": self.mean, "std": self.std, "feat4": self.feat4, "names": self.names}

    def __len__(self) -> int:
        return self.feat4.shape[0]


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """A training checkpoint ("net", "ema", "step", perhaps "opt"), or committed half-precision
    weights (a model file of an earlier period) as one: their weights as both, their step count."""
    ck = torch.load(path, map_location=device, weights_only=True)
    if ck.get("format") == "vst-model":
        state = {k: v.float() for k, v in ck["state"].items()}
        ck = {"net": state, "ema": state, "step": ck["meta"].get("steps", 0)}
    return ck


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "samples").mkdir(exist_ok=True)
        reuse_large_allocations()
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop and batch sizes
        torch.manual_seed(cfg.seed)
        self.bf16 = cfg.bf16 if cfg.bf16 is not None else (self.device.type == "cuda" or cpu_has_amx())
        # channels-last helps tensor cores and AMX; in fp32 on an AVX2 CPU it slowed the backward pass.
        self.fmt = torch.channels_last if self.device.type == "cuda" or self.bf16 else torch.contiguous_format
        self.vgg = VGGEncoder().to(self.device).to(memory_format=self.fmt)
        self.net = StyleNet(cfg.arch).to(self.device).to(memory_format=self.fmt)
        self.teacher = None
        if cfg.teacher:
            self.teacher = load_model(cfg.teacher).net.to(self.device, memory_format=self.fmt).requires_grad_(False)
            # The filter blocks have the teacher's shapes in every architecture: a head start.
            self.net.filters.load_state_dict(self.teacher.filters.state_dict())
        self.ema = StyleNet(cfg.arch).to(self.device)
        self.ema.load_state_dict(self.net.state_dict())
        self.ema.requires_grad_(False)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.step = 0
        data = Path(cfg.data)
        self.content = np.load(data / "content_train.npy", mmap_mode="r")
        self.heldout = np.load(data / "content_heldout.npy")
        bank_path = self.out / "style_bank.pt"
        if bank_path.is_file():
            b = torch.load(bank_path, weights_only=True)
            self.bank = StyleBank(b["mean"], b["std"], b["feat4"], b["names"])
        else:
            self.bank = StyleBank.build(data / "styles_train", self.vgg, cfg.style_bank_augs, cfg.seed)
            torch.save(self.bank.state(), bank_path)
        self.heldout_styles = [_read_rgb(p, 256) for p in sorted((data / "styles_heldout").iterdir())][:3]
        self._resume()

    # ----- checkpoints -------------------------------------------------------------------
    def _ckpt_path(self) -> Path:
        return self.out / "ckpt.pt"

    def _resume(self) -> None:
        path = self._ckpt_path()
        source = path if path.is_file() else (Path(self.cfg.init) if self.cfg.init else None)
        if source is None:
            return
        ck = load_checkpoint(source, self.device)
        self.net.load_state_dict(ck["net"])
        self.ema.load_state_dict(ck["ema"])
        if "opt" in ck:  # a branch continues the optimizer state of the run it starts from
            self.opt.load_state_dict(ck["opt"])
        self.step = int(ck["step"]) if source == path else int(self.cfg.extra.get("init_step", ck["step"]))
        print(f"resumed from {source} at step {self.step}", flush=True)

    def save_checkpoint(self) -> None:
        import io
        buf = io.BytesIO()
        torch.save({"step": self.step, "net": self.net.state_dict(), "ema": self.ema.state_dict(),
                    "opt": self.opt.state_dict(), "config": json.dumps(asdict(self.cfg))}, buf)
        atomic_write_bytes(self._ckpt_path(), buf.getvalue())
        if self.step == self.cfg.pretrain_steps:
            # The branch point of the baseline (no L_t) and of the ablation's fine-tunes.
            atomic_write_bytes(self.out / "ckpt_pretrain.pt", buf.getvalue())

    def export(self, path: Path, note: str = "", use_ema: bool = True) -> None:
        meta = {"steps": self.step, "total_steps": self.cfg.steps, "recipe": asdict(self.cfg), "note": note,
                "styles_trained": self.bank.names, "weights": "ema" if use_ema else "raw"}
        save_model(self.ema if use_ema else self.net, path, meta)

    # ----- one step ----------------------------------------------------------------------
    def _batch(self, gen: torch.Generator, crop: int) -> torch.Tensor:
        n = self.content.shape[0]
        idx = torch.randint(0, n, (self.cfg.batch,), generator=gen).tolist()
        src = self.content.shape[1]
        out = []
        for i in idx:
            scale = float(torch.empty(1).uniform_(crop / src, 1.0, generator=gen))
            side = max(crop, int(src * scale))
            y, x = (torch.randint(0, src - side + 1, (2,), generator=gen)).tolist()
            img = np.asarray(self.content[i, y:y + side, x:x + side])
            if side != crop:
                img = cv2.resize(img, (crop, crop), interpolation=cv2.INTER_AREA)
            if torch.rand(1, generator=gen).item() < 0.5:
                img = img[:, ::-1]
            out.append(np.ascontiguousarray(img))
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div(255.0)

    def lr(self) -> float:
        return self.cfg.lr / (1.0 + self.cfg.lr_decay * self.step)

    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step)
        crop = cfg.final_crop if self.step >= cfg.final_crop_from else cfg.crop
        colour = self._batch(gen, crop).to(self.device).contiguous(memory_format=self.fmt)
        grey = desaturate(colour)
        pick = torch.randint(0, len(self.bank), (cfg.batch,), generator=gen)
        temporal = cfg.temporal != "none" and self.step >= cfg.pretrain_steps
        for g in self.opt.param_groups:
            g["lr"] = self.lr()
        amp = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)
        with amp:
            with torch.no_grad():
                c4 = self.vgg.relu4_1(grey)
                own = self.vgg(colour[:1])  # item 0 reconstructs its own colours
            own_stats = [channel_stats(t) for t in own]
            mean = [torch.cat([own_stats[i][0], self.bank.mean[i][pick[1:]].to(self.device)]) for i in range(4)]
            std = [torch.cat([own_stats[i][1], self.bank.std[i][pick[1:]].to(self.device)]) for i in range(4)]
            m4, s4 = own_stats[3]
            own_norm4 = (own[3].float() - m4[:, :, None, None]) / s4[:, :, None, None]
            style_feat4 = self.bank.feat4[pick[1:]].to(self.device).float()

            def targets_of(net: StyleNet) -> StyleTargets:
                return StyleTargets(mean, std, [torch.cat(pair) for pair in zip(net.descriptors(own_norm4),
                                                                                 net.descriptors(style_feat4))])
            targets = targets_of(self.net)
            if self.teacher is None:
                out = self.net(c4, targets)
                parts = self._paper_losses(out, c4, colour, mean, std)
            else:
                with torch.no_grad():
                    reference = self._teacher_frame(grey, c4, targets_of(self.teacher))
                feat = self.net.content(grey, self.vgg)
                out = self.net(feat, targets)
                parts = self._distill_losses(out, reference, feat, c4, mean, std)
            if temporal:
                parts["temporal"] = (self._temporal(colour, out, targets, gen), cfg.w_temporal)
            total = sum(loss * weight for loss, weight in parts.values())
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 10.0)
        self.opt.step()
        # Warm-up: a plain 0.999 average would still hold 45% of the random initialisation
        # after 800 steps.
        decay = min(cfg.ema, (1.0 + self.step) / (10.0 + self.step))
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.net.parameters()):
                pe.lerp_(p.detach(), 1.0 - decay)
        self.step += 1
        return {"total": float(total.detach()), **{k: float(v.detach()) for k, (v, _) in parts.items()}}

    def _paper_losses(self, out: torch.Tensor, c4: torch.Tensor, colour: torch.Tensor, mean: list[torch.Tensor],
                      std: list[torch.Tensor]) -> dict[str, tuple[torch.Tensor, float]]:
        """The paper's content, style, colour-reconstruction and total-variation losses, with weights."""
        cfg = self.cfg
        o_taps = self.vgg(out)
        return {"content": (losses.content_loss(o_taps[3], c4), cfg.w_content),
                "style": (losses.style_loss(o_taps, mean, std), cfg.w_style),
                "recon": ((out[:1].float() - colour[:1]).abs().mean(), cfg.w_recon),
                "tv": (losses.tv_loss(out.float()), cfg.w_tv)}

    def _teacher_frame(self, grey: torch.Tensor, c4: torch.Tensor, targets: StyleTargets) -> torch.Tensor:
        """The teacher's frame of the batch, rendered with `teacher_pad` reflected columns each side
        (a multiple of 8: VGG's grid stays aligned) that are cropped off again."""
        pad = self.cfg.teacher_pad
        if pad == 0:
            return self.teacher(c4, targets)
        wide = F.pad(grey, (pad, pad, 0, 0), mode="reflect").contiguous(memory_format=self.fmt)
        return self.teacher(self.vgg.relu4_1(wide), targets)[..., pad:-pad]

    def _distill_losses(self, out: torch.Tensor, reference: torch.Tensor, feat: torch.Tensor, c4: torch.Tensor,
                        mean: list[torch.Tensor], std: list[torch.Tensor]) -> dict[str, tuple[torch.Tensor, float]]:
        """Distillation: the teacher's frame (L1), VGG relu4_1 for the own content encoder (MSE; the
        Filter Predictors compare it with the style's VGG relu4_1), the VGG taps of the teacher's
        frame (MSE over relu1_1..relu4_1: textures that an L1 on pixels blurs) and the paper's style
        loss on the student's output (the statistics the teacher was trained to reach)."""
        cfg = self.cfg
        parts = {"distill": ((out.float() - reference.float()).abs().mean(), cfg.w_distill),
                 "feature": (F.mse_loss(feat.float(), c4.float()), cfg.w_feature)}
        if cfg.w_perceptual > 0 or cfg.w_distill_style > 0:
            o_taps = self.vgg(out)
            if cfg.w_perceptual > 0:
                with torch.no_grad():
                    ref_taps = self.vgg(reference)
                parts["perceptual"] = (sum(F.mse_loss(o.float(), r.float()) for o, r in zip(o_taps, ref_taps)),
                                       cfg.w_perceptual)
            if cfg.w_distill_style > 0:
                parts["style"] = (losses.style_loss(o_taps, mean, std), cfg.w_distill_style)
        return parts

    def _temporal(self, colour: torch.Tensor, out: torch.Tensor, targets: StyleTargets, gen: torch.Generator) -> torch.Tensor:
        """L_noise, L_motion or the paper's L_comp = |F(W(X) + noise) - W(F(X))|; W mirrors a
        `flip_prob` share of the items too, which asks the network for the mirrored frame as well."""
        n, _, h, w = colour.shape
        second, reference = colour, out.float()
        if self.cfg.temporal in ("motion", "comp"):
            flow = random_flow(n, h, w, gen).to(self.device)
            second, reference = warp(colour, flow), warp(reference, flow)
        if self.cfg.flip_prob > 0:
            flip = (torch.rand(n, generator=gen) < self.cfg.flip_prob).to(self.device)[:, None, None, None]
            second = torch.where(flip, second.flip(-1), second)
            reference = torch.where(flip, reference.flip(-1), reference)
        if self.cfg.temporal in ("noise", "comp"):
            lo, hi = self.cfg.noise_var
            sigma = torch.empty(n, 1, 1, 1).uniform_(lo, hi, generator=gen).sqrt().to(self.device)
            second = (second + sigma * torch.randn(second.shape, generator=gen).to(self.device)).clamp(0, 1)
        out2 = self.net(self.net.content(desaturate(second), self.vgg), targets)
        return (out2.float() - reference).abs().mean()

    # ----- samples -----------------------------------------------------------------------
    @torch.no_grad()
    def write_samples(self) -> Path:
        contents = torch.from_numpy(self.heldout[:3].copy()).permute(0, 3, 1, 2).float() / 255.0
        contents = F.interpolate(contents, size=(256, 256), mode="area").to(self.device)
        rows = []
        for s in self.heldout_styles:
            st = torch.from_numpy(s.copy()).permute(2, 0, 1)[None].float().div(255).to(self.device)
            st = st[..., : st.shape[-2] // 8 * 8, : st.shape[-1] // 8 * 8]
            targets = self.ema.style_targets(self.vgg(st))
            targets = StyleTargets([m.expand(3, -1) for m in targets.mean], [v.expand(3, -1) for v in targets.std],
                                   [d.expand(3, -1) for d in targets.desc])
            out = self.ema(self.ema.content(desaturate(contents), self.vgg), targets).clamp(0, 1)
            thumb = F.interpolate(st, size=(256, 256), mode="area")
            rows.append(torch.cat([thumb[0]] + list(out), dim=2))
        grid = torch.cat([torch.cat([torch.ones(3, 256, 256)] + list(contents.cpu()), dim=2)] + [r.cpu() for r in rows], dim=1)
        img = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        path = self.out / "samples" / f"step_{self.step:06d}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])
        return path

    # ----- main loop ---------------------------------------------------------------------
    def run(self, until: int | None = None, max_seconds: float | None = None) -> None:
        """Train up to step `until` (default: the configured total), or until `max_seconds` of wall
        time have passed; either way the last step is checkpointed, so a later run resumes there."""
        cfg = self.cfg
        until = min(until or cfg.steps, cfg.steps)
        deadline = time.time() + max_seconds if max_seconds is not None else math.inf
        log = open(self.out / "log.jsonl", "a")
        acc: dict[str, float] = {}
        t0, n = time.time(), 0
        while self.step < until:
            if time.time() >= deadline:
                self.save_checkpoint()
                print(f"time limit reached at step {self.step}", flush=True)
                break
            stats = self.train_step()
            if not all(math.isfinite(v) for v in stats.values()):
                raise RuntimeError(f"non-finite loss at step {self.step}: {stats}")
            for k, v in stats.items():
                acc[k] = acc.get(k, 0.0) + v
            n += 1
            if self.step % cfg.log_every == 0:
                rec = {"step": self.step, "lr": self.lr(), "sec_per_step": (time.time() - t0) / n,
                       **{k: v / n for k, v in acc.items()}, "time": time.time()}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                print(json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in rec.items()}), flush=True)
                acc, t0, n = {}, time.time(), 0
            if self.step % cfg.ckpt_every == 0 or self.step in (until, cfg.pretrain_steps):
                self.save_checkpoint()
            if self.step % cfg.sample_every == 0:
                self.write_samples()
        log.close()
