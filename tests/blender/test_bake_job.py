"""The UI's background bake (progress, cancel, resume) and the dependency installer."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from vst_engine import GlobalFeatures
from vst_engine.features import load_shots

from blender_run import engine_python, script

ROOT = Path(__file__).resolve().parents[2]


def test_background_bake_progress_cancel_and_resume(bl_env, media, tmp_path):
    # Timers do not run in background mode: the script polls the job the way the UI timer does.
    r = script(f"""
        import time
        from video_style_transfer import jobs, plan
        sc, src = movie_scene({str(media['clip'])!r})
        e = vst.add_effect(sc, src, styles=[{str(media['style_a'])!r}], max_side=64)
        bpy.ops.wm.save_as_mainfile(filepath={str(tmp_path / 'j.blend')!r})
        job = jobs.start(plan.make_plan(sc, e))
        job.poll()                       # starts the analysis process
        proc = job._proc
        time.sleep(1.0)
        jobs.cancel(job.key)
        cancelled = dict(state=job.state, msg=job.message, exited=proc.poll() is not None,
                         active=len(jobs.active))
        p = plan.make_plan(sc, e)
        job = jobs.start(p, p.frames_for_scene([1, 2]))   # part of the strip first
        while job.poll():
            time.sleep(0.2)
        part = dict(state=job.state, total=job.total, missing=len(p.missing()))
        job = jobs.start(p)                               # then the rest: only the missing frames
        seen = []
        while job.poll():
            seen.append(job.done)
            time.sleep(0.2)
        result(dict(cancelled=cancelled, part=part, state=job.state, total=job.total, done=job.done, seen=seen,
                    msg=job.message, missing=len(p.missing()), status=vst.status(e)))
    """, bl_env, tmp_path).check()
    res = r.result
    assert res["cancelled"]["state"] == "cancelled" and res["cancelled"]["exited"]
    assert res["cancelled"]["active"] == 0
    assert res["part"] == {"state": "done", "total": 2, "missing": 4}
    assert res["state"] == "done" and res["total"] == 4 and res["done"] == 4, res
    assert res["seen"] == sorted(res["seen"])
    assert res["missing"] == 0 and res["status"]["missing"] == 0 and res["status"]["total"] == 6


def test_own_colours_are_analysed_only_once_a_strength_below_1_needs_them(bl_env, media, tmp_path):
    """At strength 1 the strip's analysis skips the clip's own colours; keying a lower strength
    later adds them to that analysis (not a new one), giving what a complete analysis gives."""
    r = script(f"""
        import os
        from video_style_transfer import plan
        sc, src = movie_scene({str(media['clip'])!r})
        e = vst.add_effect(sc, src, styles=[{str(media['style_a'])!r}], max_side=64)
        bpy.ops.wm.save_as_mainfile(filepath={str(tmp_path / 'o.blend')!r})
        p = plan.make_plan(sc, e)
        first = p.analysis_run().cmd
        ran = [vst.analyze(e), vst.analyze(e)]
        files = [sorted(os.listdir(p.clip_dir))]
        lean = os.path.join(p.clip_dir, plan.FULL_STRENGTH_FEATURES)
        stamp = os.stat(lean).st_mtime_ns
        vst.set_strength(e, 0.5, frame=4)
        p2 = plan.make_plan(sc, e)
        run = p2.analysis_run()
        ran.append(vst.analyze(e))
        files.append(sorted(os.listdir(p.clip_dir)))
        result(dict(first=first, ran=ran, files=files, label=run.label, cmd=run.cmd, features=p2.features_path,
                    lean_kept=os.stat(lean).st_mtime_ns == stamp, same_dir=p2.clip_dir == p.clip_dir))
    """, bl_env, tmp_path).check()
    res = r.result
    assert res["ran"] == [True, False, True] and res["same_dir"] and res["lean_kept"]
    assert "--full-strength" in res["first"]
    assert [f for f in res["files"][0] if f.endswith(".pt")] == ["global_features_full_strength.pt"]
    assert [f for f in res["files"][1] if f.endswith(".pt")] == ["global_features.pt",
                                                                "global_features_full_strength.pt"]
    assert res["label"] == "add own colours" and "--complete" in res["cmd"]
    # The completed features equal a complete analysis of the strip by the engine itself.
    ref = tmp_path / "ref.pt"
    cmd = [a for a in res["first"] if a != "--full-strength"]
    subprocess.run(cmd[:-1] + [str(ref)], check=True, capture_output=True, env=bl_env)
    done, want = GlobalFeatures.load(res["features"]), GlobalFeatures.load(ref)
    assert done.has_own_colours and done.sampled == want.sampled
    for mine, theirs in zip([*done.norm_mean, *done.norm_std, *done.style.tensors()],
                            [*want.norm_mean, *want.norm_std, *want.style.tensors()], strict=True):
        assert torch.allclose(mine, theirs, rtol=1e-5, atol=1e-6)


def bake_with_option(bl_env, tmp_path, clip: Path, style: Path, option: str) -> dict:
    """Bake a strip with the analysis option `option` (a strip property) on, and report its plan beside
    the plans without it and without global consistency."""
    return script(f"""
        from video_style_transfer import plan
        sc, src = movie_scene({str(clip)!r})
        e = vst.add_effect(sc, src, styles=[{str(style)!r}], max_side=64)
        bpy.ops.wm.save_as_mainfile(filepath={str(tmp_path / 'o.blend')!r})
        plain = plan.make_plan(sc, e)
        setattr(e, "vst_" + {option!r}, True)
        p = plan.make_plan(sc, e)
        cmd = p.analysis_run().cmd
        vst.bake(e)
        e.vst_consistency = False
        off = plan.make_plan(sc, e)
        result(dict(cmd=cmd, features=p.features_path, missing=len(p.missing()), plain_dir=plain.clip_dir,
                    dir=p.clip_dir, plain_info={option!r} in plain.clip_info, off=getattr(off, {option!r}),
                    off_runs=[r.cmd for r in off.runs()]))
    """, bl_env, tmp_path).check().result


def test_deflicker_goes_into_the_strips_analysis(bl_env, media, tmp_path):
    """Deflicker is an analysis option: its features (own cache folder) carry a correction per frame,
    which the stylization applies; without global consistency it has no effect."""
    res = bake_with_option(bl_env, tmp_path, media["clip"], media["style_a"], "deflicker")
    assert "--deflicker" in res["cmd"] and res["dir"] != res["plain_dir"] and not res["plain_info"]
    assert res["missing"] == 0
    feats = GlobalFeatures.load(res["features"])
    assert feats.deflickered and len(feats.extra["deflicker"]) == 6
    assert res["off"] is False and all("--deflicker" not in c and "--no-global" in c for c in res["off_runs"])


def test_per_shot_goes_into_the_strips_analysis(bl_env, tmp_path):
    """Per Shot is an analysis option: on a strip holding two shots, its features (own cache folder)
    hold each shot's statistics, and the bake stylizes every frame with its shot's."""
    clip = tmp_path / "two_shots.mp4"
    subprocess.run([engine_python(), "-c", f"""
import cv2, numpy as np
from vst_engine.video import open_sink, open_source, read_image
with open_source({str(ROOT / 'vst_engine' / 'assets' / 'bigbuckbunny.mp4')!r}) as src:
    first = [cv2.resize(src.read(i), (64, 36), interpolation=cv2.INTER_AREA) for i in range(3)]
art = cv2.resize(read_image({str(ROOT / 'vst_engine' / 'assets' / 'starry_night.jpg')!r}), (73, 36))
second = [np.ascontiguousarray(art[:, 3 * t: 3 * t + 64]) for t in range(3)]
with open_sink({str(clip)!r}, 24.0, 64, 36) as sink:
    for i, f in enumerate(first + second):
        sink.write(i, f)
"""], check=True, cwd=ROOT)
    res = bake_with_option(bl_env, tmp_path, clip, ROOT / "vst_engine" / "assets" / "starry_night.jpg", "per_shot")
    assert "--per-shot" in res["cmd"] and res["dir"] != res["plain_dir"] and not res["plain_info"]
    assert res["missing"] == 0 and res["off"] is False
    assert [f.frame_range for f in load_shots(res["features"])] == [(0, 3), (3, 6)]


def test_installer_reports_a_bad_engine_package(bl_env, tmp_path):
    r = script(f"""
        from video_style_transfer import installer, prefs
        p = prefs.prefs()
        p.engine_source = {str(tmp_path / 'no_such_package')!r}
        p.torch_requirement = ""
        try:
            bpy.ops.vst.install_dependencies(wait=True)
            msg = "no error"
        except RuntimeError as exc:
            msg = str(exc)
        result(dict(msg=msg, env=os.path.isdir(prefs.private_env_dir()), log=installer.current.log_path))
    """, dict(bl_env, BLENDER_USER_CONFIG=str(tmp_path / "config")), tmp_path, timeout=900).check()
    res = r.result
    assert "install the engine failed" in res["msg"], res
    assert res["env"] and Path(res["log"]).is_file() and str(tmp_path) in res["log"]


@pytest.mark.slow
def test_installer_makes_a_working_engine(bl_env, tmp_path):
    """Real install of torch (pip's configured index) and the engine from this repository."""
    env = dict(bl_env, VST_ENGINE_PYTHON="", BLENDER_USER_CONFIG=str(tmp_path / "config"))
    r = script(f"""
        from video_style_transfer import engine_cli, installer, prefs
        p = prefs.prefs()
        p.engine_source = {str(ROOT)!r}
        bpy.ops.vst.install_dependencies(wait=True)
        py = prefs.engine_python()
        result(dict(state=installer.current.state, python=py, info=engine_cli.engine_info(py)))
    """, env, tmp_path, timeout=1800).check()
    res = r.result
    assert res["state"] == "done" and "config" in res["python"]
    assert res["info"]["model_id"]


def test_engine_precision_is_part_of_the_cache_key(bl_env, media, tmp_path):
    """bf16, int8 and fp32 frames differ by about a grey level: they must not share cached frames.
    The Device "CPU, int8" asks the engine for int8 whatever $VST_PRECISION says."""
    from vst_engine import int8
    from vst_engine.hardware import cpu_has_amx
    r = script(f"""
        import os
        from video_style_transfer import engine_cli, plan
        sc, src = movie_scene({str(media['clip'])!r})
        e = vst.add_effect(sc, src, styles=[{str(media['style_a'])!r}], max_side=64)
        out = {{}}
        for precision in ("fp32", "auto"):
            os.environ["VST_PRECISION"] = precision
            engine_cli.clear_info_cache()
            p = plan.make_plan(sc, e)
            out[precision] = [p.clip_info["precision"], p.clip_dir]
        os.environ["VST_PRECISION"] = "fp32"
        e.vst_device = 'cpu_int8'
        p = plan.make_plan(sc, e)
        out["cpu_int8"] = [p.clip_info["precision"], p.clip_dir, [run.cmd for run in p.runs()]]
        result(out)
    """, bl_env, tmp_path).check()
    res = r.result
    assert res["fp32"][0] == "fp32"
    assert res["auto"][0] == ("bf16" if cpu_has_amx() else "fp32")
    assert (res["fp32"][1] == res["auto"][1]) == (res["auto"][0] == "fp32")
    precision, clip_dir, cmds = res["cpu_int8"]
    assert precision == ("int8" if int8.available() else "fp32")
    assert clip_dir not in (res["fp32"][1], res["auto"][1])  # the device is in the key too
    assert [c[c.index("--device"):c.index("--device") + 4] for c in cmds] == \
        [["--device", "cpu", "--precision", "int8"]] * len(cmds) and len(cmds) == 2  # analysis, stylization
