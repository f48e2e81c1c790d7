"""Command line: `vst stylize`, `vst analyze`, `vst info` (also `python -m vst_engine`)."""
from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import VstError
from . import engine_version

if TYPE_CHECKING:  # imported lazily below: `vst --help` stays fast
    from .pipeline import WriteBehind
    from .transfer import Pending

UNTRAINED_BANNER = ("WARNING: no trained weights for model '{name}': using an UNTRAINED network. "
                    "Output is NOT a stylization (train with `python3 build.py train`).")


def _progress(total: int, desc: str):
    from tqdm import tqdm
    # Redirected output (logs, a host parsing progress) gets an update every few seconds, not a stream.
    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="frame", file=sys.stderr, dynamic_ncols=True, leave=False,
                mininterval=0.1 if interactive else 3.0)


def _engine(args: argparse.Namespace):
    from .engine import Engine
    engine = Engine(model=args.model, device=args.device, precision=args.precision)
    if not engine.trained:
        print(UNTRAINED_BANNER.format(name=args.model), file=sys.stderr)
    return engine


def _compile_for(engine, frames: int, size: tuple[int, int], analysed: int) -> None:
    """Let the engine decide whether this job is long enough to compile for; say so where that changed."""
    decided = engine.compile_for_render(frames, *size, analysed=analysed)
    if decided:
        print(decided, file=sys.stderr)


def _open_input(args: argparse.Namespace):
    from .video import open_source
    return open_source(args.input)


def _analyses(engine, source, styles, args, start: int, end: int, cuts: list[int] | None,
              own_colours: bool = True, batch: int | None = None, until: int | None = None) -> list:
    """The features of frames start:end of the source, shot by shot (split at `cuts`; None: at the cuts
    found on the way, up to the first at or after `until`), `batch` frames a pass (default: the engine's
    choice); with --deflicker, also every frame's exposure."""
    from .shots import ShotAnalyses
    shots = ShotAnalyses(lambda _: engine.analysis(styles, own_colours, batch=batch), start, end, args.interval,
                         args.max_side, cuts, args.deflicker, source=str(args.input), until=until)
    _feed(shots, source)
    return shots.finish()


def _feed(shots, source) -> None:
    """Give shot analyses the source frames they want, read ahead in a thread, with a progress bar."""
    from .pipeline import prefetch
    wanted = shots.wanted()
    frames = prefetch((i, source.read(i)) for i in wanted)
    bar = _progress(len(wanted), "analyze")
    try:
        for i, frame in frames:
            shots.add(i, frame)
            bar.update(1)
            if shots.done:  # the shots after this cut are not needed
                break
    finally:
        frames.close()
        bar.close()


def _cuts(source, end: int) -> list[int]:
    """The source's cuts among its frames 0:end (read ahead in a thread, at full size)."""
    from .pipeline import prefetch
    from .shots import CutFinder
    finder = CutFinder()
    frames = prefetch(source.read(i) for i in range(end))
    bar = _progress(end, "find shots")
    try:
        for frame in frames:
            finder.add(frame)
            bar.update(1)
    finally:
        frames.close()
        bar.close()
    return finder.cuts


def _complete(engine, source, styles, lean_path: Path) -> list:
    """The features at `lean_path` (analysed with --full-strength, shot by shot or not) plus the clip's own
    colours."""
    from .engine import process_size
    from .features import load_shots
    from .shots import ShotAnalyses
    leans = load_shots(lean_path)
    max_side, info = leans[0].settings.get("max_side"), source.info
    shots = ShotAnalyses(lambda k: engine.own_colour_analysis(leans[k], styles), leans[0].frame_range[0],
                         leans[-1].frame_range[1], leans[0].interval, max_side, [f.frame_range[0] for f in leans[1:]])
    if (process_size(info.width, info.height, max_side) != tuple(leans[0].process_size)
            or leans[-1].frame_range[1] > info.count or list(shots.wanted()) != [i for f in leans for i in f.sampled]):
        raise VstError(f"{lean_path} was analysed from another clip or size: analyze again")
    _feed(shots, source)
    return shots.finish()


def _shots_note(shots: list) -> str:
    """How a clip was split into shots, for the command's last line."""
    cuts = ", ".join(str(f.frame_range[0]) for f in shots[1:])
    return f"{len(shots)} shots, cuts at frames {cuts}" if cuts else "one shot"


def cmd_analyze(args: argparse.Namespace) -> int:
    from .engine import process_size
    from .features import sample_indices, save_shots
    from .video import parse_frame_range
    engine = _engine(args)
    styles = engine.load_styles(args.style)
    if args.complete and args.full_strength:
        raise VstError("--complete and --full-strength contradict each other")
    if args.complete and (args.frames or args.max_side is not None or args.deflicker or args.per_shot):
        raise VstError("--complete reuses the features' frames, size, deflicker and shots: leave out --frames, "
                       "--max-side, --deflicker and --per-shot")
    with _open_input(args) as source:
        if args.complete:
            shots = _complete(engine, source, styles, args.complete)
        else:
            info = source.info
            start, end = parse_frame_range(args.frames, info.count) if args.frames else (0, info.count)
            size = process_size(info.width, info.height, args.max_side)
            _compile_for(engine, 0, size, len(sample_indices(start, end, args.interval)))
            # With --per-shot, one pass finds the cuts and analyses each shot's sampled frames.
            shots = _analyses(engine, source, styles, args, start, end, None if args.per_shot else [],
                              own_colours=not args.full_strength)
    save_shots(shots, args.output)
    (w, h), start, end = shots[0].process_size, shots[0].frame_range[0], shots[-1].frame_range[1]
    note = " (added the clip's own colours)" if args.complete else " (full strength only)" if args.full_strength else ""
    note += " (with deflicker corrections)" if shots[0].deflickered else ""
    note = (f" ({_shots_note(shots)})" if args.per_shot or len(shots) > 1 else "") + note
    print(f"analysed {sum(len(f.sampled) for f in shots)} of frames {start}:{end} at {w}x{h}{note} -> {args.output}")
    if shots[0].deflickered:  # how much the deflicker will change: nothing to see on footage without flicker
        scales, offsets = zip(*(c for f in shots for c in f.extra["deflicker"]))
        print(f"deflicker: frames scaled by {min(scales):.3f}-{max(scales):.3f}, offset by {min(offsets):+.1f} to "
              f"{max(offsets):+.1f} grey levels")
    return 0


def _write_group(out: WriteBehind, group: list, results: Pending, bar) -> None:
    """Hand a submitted group's stylized frames to the writer."""
    for (index, _), result in zip(group, results.result()):
        out.write(index, result)
    bar.update(len(group))


def cmd_stylize(args: argparse.Namespace) -> int:
    from .deflicker import apply_correction
    from .engine import normalize_weights, process_size, resize_frame
    from .features import GlobalFeatures, load_shots, sample_indices
    from .keys import WeightKeys, parse_weights
    from .pipeline import WriteBehind, batched, prefetch
    from .video import open_sink, parse_frame_range

    if args.weights and args.weights_file:
        raise VstError("use either --weights or --weights-file, not both")
    engine = _engine(args)
    styles = engine.load_styles(args.style)
    n = len(styles.refs)
    if args.weights_file:
        keys = WeightKeys.load(args.weights_file, n)
    else:
        keys = WeightKeys.constant(parse_weights(args.weights, n) if args.weights else [1.0] * n)
    for frame in sorted({f for k in keys.keys for f, _ in k}):  # validate every key pose up front
        normalize_weights(keys.at(frame), n)
    if args.strength is not None and keys.strength:
        raise VstError("--strength contradicts the strength keys in the weights file: give one of them")
    if args.batch is not None and args.batch < 1:
        raise VstError(f"--batch must be at least 1, got {args.batch}")
    if args.strength is not None and not 0.0 <= args.strength <= 1.0:
        raise VstError(f"--strength must be between 0 and 1, got {args.strength}")
    default_strength = 1.0 if args.strength is None else args.strength
    lowest = min(v for _, v in keys.strength) if keys.strength else default_strength  # the clip's own colours needed?

    with _open_input(args) as source:
        info = source.info
        start, end = parse_frame_range(args.frames, info.count) if args.frames else (0, info.count)
        size = process_size(info.width, info.height, args.max_side)
        if args.per_shot and (args.no_global or args.features):
            raise VstError("--per-shot analyses each shot itself (features analysed with it carry their shots): "
                           f"leave out {'--no-global' if args.no_global else '--features'}")
        if args.no_global and (args.features or args.deflicker):
            raise VstError(f"{'--features' if args.features else '--deflicker'} and --no-global contradict each other "
                           "(per-frame statistics normalize each frame's exposure anyway)")
        batch = args.batch or engine.auto_batch(*size)
        analysed = 0 if args.no_global or args.features else len(sample_indices(0, info.count, args.interval))
        _compile_for(engine, end - start, size, analysed)
        plans = [(0, info.count, styles)]  # (first, end, what stylizes frames first:end)

        def plan_at(index: int):
            return next(p for s, e, p in plans if s <= index < e)

        if args.features:
            shots = load_shots(args.features)
            for feats in shots:
                feats.check(engine.model.model_id, styles.refs, size, strength=lowest)
            if args.deflicker and not shots[0].deflickered:
                raise VstError(f"{args.features} was analysed without --deflicker: analyze again with it")
            first, last = shots[0].frame_range[0], shots[-1].frame_range[1]
            if len(shots) > 1 and not first <= start < end <= last:
                raise VstError(f"frames {start}:{end} are not all within the frames {first}:{last} {args.features} "
                               "analysed shot by shot: analyze the whole clip")
            plans = [(f.frame_range[0], f.frame_range[1], f) for f in shots] if len(shots) > 1 else \
                [(0, info.count, shots[0])]
            for index in (start, end - 1):  # a deflicker of other frames is refused here, before any output
                plan_at(index).exposure_correction(index)
        audio = info.path if info.has_audio else None  # only a video output takes it
        # Opened before the analysis so an unwritable output fails at once, not after minutes.
        with open_sink(args.output, info.fps, size[0], size[1], audio_from=audio, start_time=start / info.fps) as sink:
            if sink.single_frame and end - start != 1:  # refused before anything runs or is written
                raise VstError(f"an image output holds one frame, and frames {start}:{end} are {end - start}: pick "
                               "one with --frames K:K+1, or write a video or a folder (a path ending in '/')")
            if not args.no_global and not args.features:
                # The whole clip (or the shots --frames touch, whole), not just --frames: separate chunks
                # of a render then share one result. The clip's own colours are analysed only if some
                # frame blends towards them.
                # With --per-shot one pass from the first frame of start's shot finds the cuts and analyses
                # the shots up to the first cut at or after `end`.
                first = max([0] + _cuts(source, start + 1)) if args.per_shot and start else 0
                plans = [(f.frame_range[0], f.frame_range[1], f) for f in
                         _analyses(engine, source, styles, args, first, info.count, None if args.per_shot else [],
                                   own_colours=lowest < 1, batch=args.batch, until=end)]

            def correction(index: int) -> tuple[float, float]:
                p = plan_at(index)
                return p.exposure_correction(index) if isinstance(p, GlobalFeatures) else (1.0, 0.0)
            bar = _progress(end - start, "stylize")
            # Decoding and encoding overlap with the model's work (reader and writer threads).
            frames = prefetch(apply_correction(resize_frame(source.read(i), size), correction(i))
                              for i in range(start, end))
            write = sink.write
            if info.has_alpha and sink.keeps_alpha:  # PNG frames (and PNG, TIFF, WebP images) keep it
                write = lambda index, rgb: sink.write(index, rgb, resize_frame(source.read_alpha(index), size))  # noqa: E731
            try:
                with WriteBehind(write) as out:
                    # Frames with the same weights, strength and shot share a pass (several at a time on a GPU).
                    pose = lambda item: (tuple(keys.at(item[0])), keys.strength_at(item[0], default_strength),  # noqa: E731
                                         id(plan_at(item[0])))
                    # One group stays in flight: on a GPU its copies overlap with the next group's pass.
                    pending = None
                    for group in batched(zip(range(start, end), frames), batch, pose):
                        weights, strength, _ = pose(group[0])
                        submitted = group, engine.submit([f for _, f in group], plan_at(group[0][0]), weights,
                                                         strength, args.preserve_color)
                        if pending:
                            _write_group(out, *pending, bar)
                        pending = submitted
                    if pending:
                        _write_group(out, *pending, bar)
            finally:
                frames.close()
                bar.close()
    label = "" if engine.trained else " (UNTRAINED model)"
    if args.per_shot or len(plans) > 1:
        label += f" ({_shots_note([p for _, _, p in plans])})"
    if sink.encoded_size != size:
        label += f" (encoded at {sink.encoded_size[0]}x{sink.encoded_size[1]}, last row or column repeated: the " \
                 f"codec needs even sizes)"
    print(f"stylized frames {start}:{end} at {size[0]}x{size[1]} -> {args.output}{label}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import cv2
    import numpy
    import torch

    from .engine import (ANALYSED_FRAME_WEIGHT, accelerations, compile_pays_off, compile_threshold, compute_dtype,
                         int8_convolutions, precision_name, resolve_device, winograd_convolutions)
    from .models import load_model, model_path
    from .vgg import WEIGHTS_PACKAGE, weights_path
    model = load_model(args.model)
    device = resolve_device(args.device)
    try:
        vgg = f"{weights_path()} (sha256 ok)"
    except VstError as exc:
        vgg = f"MISSING: {exc}"
    dtype = compute_dtype(device, args.precision)
    compile, graphs = accelerations(device)
    threshold = compile_threshold(device)
    int8 = int8_convolutions(device, args.precision, compile, model.net.arch)
    winograd = winograd_convolutions(device, dtype, compile, model.net.arch, args.precision)
    accel = [name for name, on in (("torch.compile", compile), ("CUDA graphs", graphs),
                                   ("Winograd convolutions (NNPACK)", winograd),
                                   ("int8 convolutions (oneDNN)", int8)) if on]
    lines = [
        f"model:        {args.model} ({model.model_id})",
        f"trained:      {'yes' if model.trained else 'NO - UNTRAINED network, output is not a stylization'}",
        f"model file:   {model_path(args.model) if model.trained else 'none'}",
        f"architecture: {model.net.arch}",
        f"steps:        {model.meta.get('steps', '-')}",
        f"device:       {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        f"precision:    {precision_name(dtype, int8)}",
        f"acceleration: {' + '.join(accel) or 'none (eager)'}"
        # what `vst stylize`, `vst analyze` and the service decide by a job's length where no one else did
        + (f" (long jobs compile: renders of {threshold / 1e6:,.0f} million frame pixels or more, an analysed "
           f"frame counting {ANALYSED_FRAME_WEIGHT}, in vst stylize, vst analyze and the engine service"
           + ("; shorter ones run uncompiled)" if compile else ")")
           if compile_pays_off(device, dtype, 1, threshold, 1) and "VST_COMPILE" not in os.environ else ""),
        f"VGG-19:       {vgg} from {WEIGHTS_PACKAGE}",
        f"versions:     vst_engine {engine_version()}, python {platform.python_version()}, torch {torch.__version__}, "
        f"numpy {numpy.__version__}, opencv {cv2.__version__}",
    ]
    print("\n".join(lines))
    return 0



def cmd_serve(args: argparse.Namespace) -> int:
    from .service.handlers import Handlers, default_features_dir
    from .service.server import default_socket_path, serve
    if args.idle_timeout <= 0:
        raise VstError("--idle-timeout must be positive")
    engine = _engine(args)
    # Uncompiled until a host analyses a clip long enough to repay compiling (`Handlers.analyze_frame`).
    engine.compile_for_render(0, 0, 0)
    handlers = Handlers(engine, args.features_dir or default_features_dir())
    return serve(args.socket or default_socket_path(), handlers, args.idle_timeout)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vst", description="Flicker-free video style transfer (Wang et al., AAAI 2020).")
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", default="default", help="built-in model (default; lite: about 4x faster on CPUs, "
                       "distilled from default; baseline; untrained) or a model file")
        p.add_argument("--device", default="auto", help="auto, cpu or cuda")
        p.add_argument("--precision", default=None, choices=("auto", "fp32", "int8"),
                       help="auto: fp16 on CUDA, bf16 on CPUs with AMX, else fp32; int8: the default model's "
                       "wide convolutions in int8 on CPUs with VNNI (default: $VST_PRECISION, else auto)")

    def clip(p: argparse.ArgumentParser) -> None:
        p.add_argument("input", type=Path, help="a video file or a folder of images")
        p.add_argument("-s", "--style", action="append", required=True, type=Path, help="style image (repeatable)")
        p.add_argument("--max-side", type=int, default=None, help="downscale so the longer side is at most N pixels")
        p.add_argument("--frames", default=None, help="A:B, 0-based, end exclusive")
        p.add_argument("--interval", type=int, default=8, help="analyse every Nth frame (plus the last)")
        p.add_argument("--per-shot", action="store_true", help="find the clip's cuts and analyse each shot on its "
                       "own (global features shared within a shot, not across cuts; reads every frame once more)")
        p.add_argument("--deflicker", action="store_true",
                       help="measure every frame's exposure in the analysis and even out its flicker (reads every "
                       "frame; features analysed so deflicker every stylization that uses them)")
        common(p)

    p = sub.add_parser("stylize", help="stylize a clip")
    clip(p)
    p.add_argument("--weights", default=None, help="style weights, e.g. 0.3,0.7 (normalized)")
    p.add_argument("--weights-file", default=None, help='JSON keyframes per style: [{frame: weight}, ...], or '
                   '{"weights": [...], "strength": {frame: strength}}')
    p.add_argument("--strength", type=float, default=None, help="0 keeps the clip, 1 full style (default 1)")
    p.add_argument("--preserve-color", action="store_true", help="keep the clip's own colours (luminance transfer)")
    p.add_argument("--no-global", action="store_true", help="per-frame statistics (the paper's baseline behaviour)")
    p.add_argument("--features", default=None, help="use stored global features instead of analysing")
    p.add_argument("--batch", type=int, default=None,
                   help="frames per network pass, analysed and stylized (default: up to 4 on a GPU with room, "
                   "1 on a CPU)")
    p.add_argument("-o", "--output", required=True, help="video file, or a folder (trailing /) for PNG frames")
    p.set_defaults(func=cmd_stylize)

    p = sub.add_parser("analyze", help="compute a clip's global features (the first pass)")
    clip(p)
    p.add_argument("--full-strength", action="store_true",
                   help="skip the clip's own colours, about a third of the work: the features then serve strength 1 only")
    p.add_argument("--complete", type=Path, default=None, metavar="FEATURES",
                   help="add the clip's own colours to FEATURES analysed with --full-strength (analyses only "
                   "those; its frames, range and size are reused)")
    p.add_argument("-o", "--output", required=True, help="global features file to write")
    p.set_defaults(func=cmd_analyze)

    from .evaluate import add_eval_parser
    add_eval_parser(sub)

    p = sub.add_parser("serve", help="run the engine as a local service for OpenFX and other hosts")
    common(p)
    p.add_argument("--socket", type=Path, default=None, help="socket path (default: $VST_SERVICE_SOCKET, "
                   "else $XDG_RUNTIME_DIR/vst-engine/engine.sock, else /tmp/vst-engine-UID/engine.sock)")
    p.add_argument("--features-dir", type=Path, default=None,
                   help="where analysed global features are stored (default: $VST_FEATURES_DIR or ~/.cache/vst_engine/features)")
    p.add_argument("--idle-timeout", type=float, default=600.0, help="exit after this many seconds without clients")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("info", help="model, device and versions")
    common(p)
    p.set_defaults(func=cmd_info)
    return ap


def _join_negative_values(argv: list[str]) -> list[str]:
    """Let `--weights -1,2` reach our validation instead of argparse taking -1,2 for an option."""
    out, it = [], iter(argv)
    for a in it:
        if a in ("--weights", "--strength"):
            value = next(it, None)
            out.append(a if value is None else f"{a}={value}")
        else:
            out.append(a)
    return out


def _check_not_an_input(args: argparse.Namespace) -> None:
    """Refuse an output that is one of the command's inputs: it would be overwritten (or, for a
    folder of frames, mixed into the clip being read)."""
    output = getattr(args, "output", None) or getattr(args, "json", None)
    if output is None:
        return
    inputs = [getattr(args, name, None) for name in ("input", "stylized", "features", "weights_file", "complete")]
    style = getattr(args, "style", None)
    inputs += style if isinstance(style, list) else [style]
    target = Path(output).resolve()
    for item in inputs:
        if item is not None and Path(item).resolve() == target:
            raise VstError(f"the output {output} is also an input ({item}): write somewhere else")


def main(argv: list[str] | None = None) -> int:
    argv = _join_negative_values(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    if getattr(args, "max_side", None) is not None and args.max_side < 8:
        print("vst: error: --max-side must be at least 8", file=sys.stderr)
        return 2
    try:
        _check_not_an_input(args)
        return args.func(args)
    except VstError as exc:
        print(f"vst: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vst: interrupted; no partial output was kept", file=sys.stderr)
        return 130
