"""The add-on's demo: a clip, two styles cross-faded over it, rendered by Blender to an H.264 video.

    blender -b --factory-startup --addons video_style_transfer --python blender_addon/demo_scene.py -- \
        --clip CLIP --style-a A --style-b B --max-side N --out OUT.mp4 [--frames N]

Creates a new scene (Standard view transform) with the clip as a movie strip (and its sound, if any),
adds a style-transfer strip with the two styles, keys style A's weight 1 -> 0 and style B's 0 -> 1
linearly over the rendered range (the whole clip, or its first --frames frames), saves the project
as OUT's folder/demo.blend and renders the sequencer to OUT (FFmpeg, H.264 + AAC). The output size is
the processing size (the clip scaled so its longer side is --max-side, rounded to even numbers).
Any failure exits with code 1 and a one-line message.
"""
from __future__ import annotations

import argparse
import os
import sys

# Debian's Blender 3.4 segfaults at exit after a --python script if multiprocessing's
# __mp_main__ alias is left in sys.modules.
sys.modules.pop("__mp_main__", None)

import bpy  # noqa: E402


def fail(msg: str) -> None:
    print(f"demo_scene: error: {' '.join(str(msg).split())}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)


def parse_args() -> argparse.Namespace:
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    ap = argparse.ArgumentParser(prog="demo_scene.py")
    ap.add_argument("--clip", required=True)
    ap.add_argument("--style-a", required=True)
    ap.add_argument("--style-b", required=True)
    ap.add_argument("--max-side", type=int, default=256)
    ap.add_argument("--out", required=True, help="output video (.mp4)")
    ap.add_argument("--frames", type=int, default=None, help="render only the first N frames")
    try:
        return ap.parse_args(argv)
    except SystemExit as exc:
        fail(f"bad arguments (exit {exc.code})")


def even(v: float) -> int:
    return max(2, int(round(v / 2.0)) * 2)


def linear_keys(scene) -> None:
    from video_style_transfer import compat
    for fc in compat._action_fcurves(scene):
        for kp in fc.keyframe_points:
            kp.interpolation = 'LINEAR'


def build(args: argparse.Namespace) -> None:
    try:
        import video_style_transfer.api as vst
        from video_style_transfer import compat
    except ImportError as exc:
        fail(f"the add-on is not enabled (run with --addons video_style_transfer): {exc}")

    clip = os.path.abspath(args.clip)
    out = os.path.abspath(args.out)
    styles = [os.path.abspath(args.style_a), os.path.abspath(args.style_b)]
    for p in [clip, *styles]:
        if not os.path.isfile(p):
            fail(f"file not found: {p}")
    if args.max_side < 16:
        fail(f"--max-side must be at least 16, got {args.max_side}")
    if args.frames is not None and args.frames < 2:
        fail(f"--frames must be at least 2, got {args.frames}")
    out_dir = os.path.dirname(out)
    os.makedirs(out_dir, exist_ok=True)
    blend = os.path.join(out_dir, "demo.blend")

    bpy.context.preferences.filepaths.save_version = 0  # no demo.blend1 backups
    old = list(bpy.data.scenes)
    sc = bpy.data.scenes.new("VST demo")
    wm = bpy.context.window_manager
    for win in (wm.windows if wm else []):
        win.scene = sc
    for s in old:  # the factory scene: the demo file holds only the demo
        try:
            bpy.data.scenes.remove(s)
        except Exception:
            pass
    sc.view_settings.view_transform = 'Standard'
    ed = sc.sequence_editor_create()
    # The project lives next to the output, so its cache (//vst_cache) does too.
    bpy.ops.wm.save_as_mainfile(filepath=blend, relative_remap=False)

    src = compat.new_movie_strip(ed, "clip", clip, 1, 1)
    if src.frame_duration < 2:
        fail(f"cannot read the clip (Blender sees {src.frame_duration} frames): {clip}")
    from video_style_transfer.effect import media_size
    size = media_size(src)
    if not size or not all(size):
        fail(f"cannot read the clip's size: {clip}")
    w, h = size
    fps = float(src.fps) if getattr(src, "fps", 0) else 25.0
    sc.render.fps, sc.render.fps_base = int(round(fps * 1000)), 1000.0
    if abs(fps - round(fps)) < 1e-3:
        sc.render.fps, sc.render.fps_base = int(round(fps)), 1.0
    scale = min(1.0, args.max_side / max(w, h))
    sc.render.resolution_x, sc.render.resolution_y = even(w * scale), even(h * scale)
    sc.render.resolution_percentage = 100
    src.transform.scale_x = sc.render.resolution_x / w
    src.transform.scale_y = sc.render.resolution_y / h

    first = int(src.frame_final_start)
    last = int(src.frame_final_end) - 1
    if args.frames is not None:
        last = min(last, first + args.frames - 1)
    sc.frame_start, sc.frame_end = first, last

    try:
        effect = vst.add_effect(sc, src, styles=styles, max_side=args.max_side, name="styled")
        vst.set_weight(effect, 0, 1.0, frame=first)
        vst.set_weight(effect, 0, 0.0, frame=last)
        vst.set_weight(effect, 1, 0.0, frame=first)
        vst.set_weight(effect, 1, 1.0, frame=last)
    except vst.EngineError as exc:
        fail(exc)
    linear_keys(sc)

    has_sound = False
    try:
        chan = max(s.channel for s in compat.all_strips(ed)) + 1
        snd = compat.strips(ed).new_sound(name="clip sound", filepath=clip, channel=chan, frame_start=first)
        has_sound = snd.frame_duration > 0
        if not has_sound:
            compat.strips(ed).remove(snd)
    except (RuntimeError, TypeError, AttributeError):
        has_sound = False  # no audio stream

    r = sc.render
    r.use_sequencer = True
    r.use_compositing = False
    r.image_settings.file_format = 'FFMPEG'
    r.ffmpeg.format = 'MPEG4'
    r.ffmpeg.codec = 'H264'
    r.ffmpeg.constant_rate_factor = 'HIGH'
    r.ffmpeg.ffmpeg_preset = 'GOOD'
    r.ffmpeg.gopsize = max(1, int(round(fps)))
    if has_sound:
        r.ffmpeg.audio_codec = 'AAC'
        r.ffmpeg.audio_bitrate = 128
        r.ffmpeg.audio_channels = 'STEREO'
    else:
        r.ffmpeg.audio_codec = 'NONE'
    r.use_file_extension = True
    r.filepath = out
    bpy.ops.wm.save_as_mainfile(filepath=blend, relative_remap=False)
    print(f"demo_scene: {blend}: {w}x{h} clip at {fps:g} fps -> {r.resolution_x}x{r.resolution_y}, "
          f"frames {first}-{last}, sound {'yes' if has_sound else 'no'}", flush=True)

    if os.path.exists(out):
        os.remove(out)
    try:
        result = bpy.ops.render.render(animation=True, scene=sc.name)
    except RuntimeError as exc:
        fail(f"render failed: {exc}")
    if 'FINISHED' not in result:
        fail(f"render did not finish: {sorted(result)}")
    if not os.path.isfile(out) or os.path.getsize(out) == 0:
        fail(f"render wrote no video at {out}")
    print(f"demo_scene: wrote {out} ({os.path.getsize(out)} bytes)", flush=True)


def main() -> None:
    args = parse_args()
    try:
        build(args)
    except Exception as exc:  # noqa: BLE001 - one line, non-zero exit
        fail(f"{type(exc).__name__}: {exc}")
    sys.modules.pop("__mp_main__", None)


main()
