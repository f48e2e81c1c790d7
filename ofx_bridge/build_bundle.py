#!/usr/bin/env python3
"""Build the OpenFX bundle VideoStyleTransfer.ofx.bundle with gcc (Linux x86-64).

    python3 ofx_bridge/build_bundle.py [OUT_DIR] [--sanitize] [--no-werror]

The plugin is plain C11 linked against libc only; see docs/OFX.md for macOS and Windows.
Only the standard library is used here.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = sorted((HERE / "src").glob("*.c"))
BUNDLE = "VideoStyleTransfer.ofx.bundle"
ARCH_DIR = "Linux-x86-64"
README = """Video Style Transfer (OpenFX)

Restyles video after artworks. The plugin talks to the vst_engine service
(`python -m vst_engine serve`), which it starts on demand with $VST_ENGINE_PYTHON
(default python3). See docs/OFX.md in the project for set-up and parameters.
"""


def compiler() -> str:
    cc = os.environ.get("CC", "gcc")
    if not shutil.which(cc):
        raise RuntimeError(f"C compiler '{cc}' not found (install gcc, or set CC)")
    return cc


def build_bundle(out_dir: Path, sanitize: bool = False, werror: bool = True) -> Path:
    """Compile the plugin into <out_dir>/VideoStyleTransfer.ofx.bundle; returns the .ofx path."""
    out_dir = Path(out_dir)
    bundle = out_dir / BUNDLE
    binary = bundle / "Contents" / ARCH_DIR / "VideoStyleTransfer.ofx"
    binary.parent.mkdir(parents=True, exist_ok=True)
    resources = bundle / "Contents" / "Resources"
    resources.mkdir(parents=True, exist_ok=True)
    (resources / "README.txt").write_text(README)

    flags = ["-std=c11", "-fPIC", "-shared", "-Wall", "-Wextra", "-fvisibility=hidden", "-I", str(HERE / "include")]
    if werror:
        flags.append("-Werror")
    if sanitize:
        flags += ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                  "-fno-sanitize-recover=undefined"]
    else:
        flags += ["-O2"]
    # -pthread is a no-op on glibc >= 2.34 (pthreads live in libc) and --as-needed drops the stub;
    # -z defs turns a symbol missing from libc into a link error instead of a load failure in the host.
    link = ["-pthread", "-Wl,--as-needed", "-Wl,-z,defs", "-Wl,-z,noexecstack"]
    if not sanitize:
        link.append("-s")  # stripped; the dynamic symbol table (the OFX entry points) stays
    tmp = binary.with_suffix(".ofx.tmp")
    cmd = [compiler(), *flags, *[str(s) for s in SOURCES], "-o", str(tmp), *link]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"compiling the OpenFX plugin failed:\n{' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    os.replace(tmp, binary)  # a host scanning the folder never sees a half-written plugin
    return binary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", nargs="?", default=str(HERE.parent / "dist"), help="where the bundle goes (default dist/)")
    ap.add_argument("--sanitize", action="store_true", help="AddressSanitizer + UBSan build (for tests)")
    ap.add_argument("--no-werror", action="store_true", help="do not treat warnings as errors")
    args = ap.parse_args(argv)
    try:
        path = build_bundle(Path(args.out_dir), sanitize=args.sanitize, werror=not args.no_werror)
    except RuntimeError as exc:
        print(f"build_bundle: {exc}", file=sys.stderr)
        return 1
    print(f"OpenFX plugin: {path.parents[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
