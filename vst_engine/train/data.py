"""Assemble the training data (content photos + style artworks) from Debian packages.

Everything comes from packages in the Debian archive, fetched with ``apt-get download``
and unpacked with ``dpkg-deb -x``; the licence of every file is looked up in the
package's machine-readable ``/usr/share/doc/PKG/copyright`` file.

Output layout (``out_dir``)::

    content_train.npy        uint8 [N, 288, 288, 3] RGB crops for training
    content_heldout.npy      uint8 [M, 288, 288, 3] RGB crops of photos never used in training
    styles_train/NNN_x.png   artworks (RGB, longest side <= 512)
    styles_heldout/NNN_x.png artworks kept out of training (incl. Starry Night, the demo style)
    manifest.json            {"summary": {...}, "entries": [...]}, one entry per output item
    MANIFEST.md              the same as readable tables
    _downloads/              the .deb files (default download_dir; reused on later runs)

Sources:

* content: ``endless-sky-data`` landscape photos, real photographs among the
  ``opencv-doc`` sample data, photographic wallpapers from ``plasma-workspace-wallpapers``,
  ``mate-backgrounds`` and ``lxqt-themes``, and the monument photos of the GCompris
  "details" activity;
* styles: ``starry_night.jpg`` from ``opencv-doc`` and the paintings of the GCompris
  (``gcompris-qt-data``) "paintings" jigsaw (reassembled from the pieces and the board
  files giving each piece's position) and "details" activity, read from Qt ``.rcc``
  bundles with :mod:`vst_engine.train.qt_rcc`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from vst_engine.atomic import atomic_open, atomic_write_bytes, atomic_write_text
from vst_engine.train.qt_rcc import RccFile

__all__ = [
    "assemble",
    "atomic_open",
    "square_crops",
    "resize_max_side",
    "reassemble_pieces",
    "Dep5Copyright",
    "CROP_SIZE",
    "STYLE_MAX_SIDE",
]

ASSEMBLER_VERSION = 1
CROP_SIZE = 288
STYLE_MAX_SIDE = 512
N_HELDOUT_CONTENT = 16
MAX_PACKAGE_BYTES = 150 * 1024 * 1024  # skip optional packages larger than this

# Packages: name -> required?  (optional ones are skipped if unavailable or too large)
PACKAGES: dict[str, bool] = {
    "endless-sky-data": True,
    "opencv-doc": True,
    "gcompris-qt-data": True,
    "plasma-workspace-wallpapers": False,
    "mate-backgrounds": False,
    "lxqt-themes": False,
}

# Styles held out of training: the demo style plus one more, fixed by name so the split is stable.
HELDOUT_STYLE_KEYS = ("opencv-doc:starry_night", "gcompris:GreatWave")

# endless-sky land images that are not ordinary photographs (false-colour Jupiter, abstract).
_ENDLESS_SKY_EXCLUDE = {"nasa8.jpg", "nasa9.jpg", "space6.jpg"}
# opencv-doc samples/data: colour photographs only (no logos, charts, chessboards, text,
# renders, grayscale calibration shots; one image of each stereo/near-duplicate pair; no lena).
_OPENCV_PHOTOS = (
    "aero1.jpg", "aero3.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "building.jpg",
    "butterfly.jpg", "chicky_512.png", "fruits.jpg", "graf1.png", "home.jpg", "leuvenA.jpg",
    "messi5.jpg", "orange.jpg", "rubberwhale1.png", "squirrel_cls.jpg", "stuff.jpg",
)
# plasma-workspace-wallpapers: the photographic ones (the others are drawings/abstract renders).
_PLASMA_PHOTOS = (
    "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf",
    "Grey", "Kite", "OneStandsOut", "Path", "summer_1am",
)
# lxqt-themes wallpapers credited to their photographer in usr/share/lxqt/wallpapers/License.
_LXQT_PHOTOS = {
    "after-the-rain.jpg": "stefonarch", "appleflower.png": "stefonarch", "beam.png": "stefonarch",
    "butterfly.png": "stefonarch", "drop.png": "stefonarch", "flowers.png": "stefonarch",
    "fog.jpg": "stefonarch", "this-is-not-windows.jpg": "stefonarch",
}
# GCompris paintings boards that are not paintings (photo of a marble sculpture).
_GCOMPRIS_SKIP_PAINTINGS = {"Michelangelo_Pieta"}


# --------------------------------------------------------------------------------------
# Atomic file writing
# --------------------------------------------------------------------------------------
def _write_npy(path: Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def _write_png_rgb(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    atomic_write_bytes(path, buf.tobytes())


# --------------------------------------------------------------------------------------
# Image helpers
# --------------------------------------------------------------------------------------
def _to_rgb(img: np.ndarray) -> np.ndarray:
    """OpenCV-decoded image (gray, BGR or BGRA, 8/16 bit) -> uint8 RGB."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _decode(data: bytes, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if img is None:
        raise ValueError("image could not be decoded")
    return img


def _read_rgb(path: Path) -> np.ndarray:
    return _to_rgb(_decode(Path(path).read_bytes(), cv2.IMREAD_COLOR))


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    shrink = width * height < img.shape[0] * img.shape[1]
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def resize_max_side(img: np.ndarray, max_side: int = STYLE_MAX_SIDE) -> np.ndarray:
    """Shrink ``img`` so its longest side is at most ``max_side`` (never enlarges)."""
    h, w = img.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return img
    return _resize(img, max(1, round(w * scale)), max(1, round(h * scale)))


def square_crops(img: np.ndarray, size: int = CROP_SIZE, max_crops: int = 3) -> list[tuple[str, np.ndarray]]:
    """Resize so the short side is ``size``, then cut 1-3 ``size`` x ``size`` crops along the long side.

    Aspect < 1.4 gives one centre crop, < 1.9 two crops (start/end), otherwise three
    (start/centre/end).  Returns ``[(position_name, uint8 array [size, size, C]), ...]``.
    """
    h, w = img.shape[:2]
    scale = size / min(h, w)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = _resize(img, nw, nh)
    long_side = max(nw, nh)
    aspect = long_side / size
    n = 1 if aspect < 1.4 else (2 if aspect < 1.9 else 3)
    n = max(1, min(n, max_crops))
    span = long_side - size
    if n == 1:
        positions = [("centre", span // 2)]
    elif n == 2:
        positions = [("start", 0), ("end", span)]
    else:
        positions = [("start", 0), ("centre", span // 2), ("end", span)]
    out = []
    for name, off in positions:
        crop = img[:, off:off + size] if nw >= nh else img[off:off + size, :]
        out.append((name, np.ascontiguousarray(crop, dtype=np.uint8)))
    return out


def _is_grayscale(rgb: np.ndarray) -> bool:
    small = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA).astype(np.int16)
    return float(np.abs(small[..., 0] - small[..., 1]).mean() + np.abs(small[..., 1] - small[..., 2]).mean()) < 2.0


def reassemble_pieces(
    pieces: list[tuple[np.ndarray, float, float]], width: int, height: int, max_hole_fraction: float = 0.005
) -> np.ndarray:
    """Put jigsaw pieces back together; returns the RGB picture cropped to the covered area.

    ``pieces`` holds ``(image, cx, cy)``: an OpenCV-decoded piece (BGR or BGRA, alpha
    giving its shape) and the position of its centre on a ``width`` x ``height`` board,
    as in GCompris' babymatch boards (``x = posX * width - pieceWidth / 2``).  Overlapping
    anti-aliased edges are averaged by alpha; tiny uncovered gaps are inpainted.
    """
    acc = np.zeros((height, width, 3), np.float32)
    weight = np.zeros((height, width), np.float32)
    for img, cx, cy in pieces:
        ph, pw = img.shape[:2]
        bgr = img[..., :3].astype(np.float32)
        alpha = img[..., 3].astype(np.float32) / 255.0 if img.ndim == 3 and img.shape[2] == 4 else np.ones((ph, pw), np.float32)
        x0, y0 = int(round(cx - pw / 2)), int(round(cy - ph / 2))
        xs, ys, xe, ye = max(0, x0), max(0, y0), min(width, x0 + pw), min(height, y0 + ph)
        if xe <= xs or ye <= ys:
            continue
        a = alpha[ys - y0:ye - y0, xs - x0:xe - x0]
        acc[ys:ye, xs:xe] += bgr[ys - y0:ye - y0, xs - x0:xe - x0] * a[..., None]
        weight[ys:ye, xs:xe] += a
    covered = weight > 0.5
    if not covered.any():
        raise ValueError("no piece landed on the board")
    rows, cols = np.nonzero(covered.any(axis=1))[0], np.nonzero(covered.any(axis=0))[0]
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    # Trim ragged outer edges (a few pixels at most) where a border line is not fully covered.
    for _ in range(6):
        if y1 - y0 < 16 or x1 - x0 < 16:
            break
        sub = covered[y0:y1, x0:x1]
        ragged = [bool((~line).mean() > 0.02) for line in (sub[0], sub[-1], sub[:, 0], sub[:, -1])]
        if not any(ragged):
            break
        y0, y1 = y0 + ragged[0], y1 - ragged[1]
        x0, x1 = x0 + ragged[2], x1 - ragged[3]
    acc, weight, covered = acc[y0:y1, x0:x1], weight[y0:y1, x0:x1], covered[y0:y1, x0:x1]
    holes = ~covered
    if holes.mean() > max_hole_fraction:
        raise ValueError(f"reassembled picture has {holes.mean():.1%} uncovered pixels")
    bgr = np.clip(acc / np.maximum(weight, 1e-6)[..., None] + 0.5, 0, 255).astype(np.uint8)
    if holes.any():
        bgr = cv2.inpaint(bgr, holes.astype(np.uint8), 3, cv2.INPAINT_TELEA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------------------
# Debian packages and their copyright files
# --------------------------------------------------------------------------------------
@dataclass
class Dep5Stanza:
    """One ``Files:`` paragraph of a machine-readable debian/copyright file."""

    patterns: list[str]
    copyright: str
    licence: str  # short name, e.g. "CC-BY-SA-4.0"
    comment: str = ""
    licence_text: str = ""  # text given inline after the short name (e.g. why it is public domain)
    regexes: list[re.Pattern] = field(default_factory=list, repr=False)


class Dep5Copyright:
    """Minimal parser for machine-readable (DEP-5) debian/copyright files.

    :meth:`lookup` returns the *last* ``Files`` paragraph matching a path (as the
    format specifies); ``*`` matches any characters including ``/``, ``?`` one character.
    """

    def __init__(self, text: str) -> None:
        self.stanzas: list[Dep5Stanza] = []
        for para in re.split(r"\n\s*\n", text):
            fields = self._fields(para)
            if "files" not in fields:
                continue
            patterns = fields["files"].split()
            lic, _, lic_text = fields.get("license", "").partition("\n")
            stanza = Dep5Stanza(patterns, fields.get("copyright", "").strip(), lic.strip(),
                                fields.get("comment", "").strip(), " ".join(lic_text.split()))
            stanza.regexes = [re.compile(self._glob_to_regex(p)) for p in patterns]
            self.stanzas.append(stanza)

    @staticmethod
    def _fields(para: str) -> dict[str, str]:
        fields: dict[str, str] = {}
        key = None
        for line in para.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and key is not None:
                cont = line.strip()
                fields[key] += "\n" + ("" if cont == "." else cont)
            elif ":" in line:
                key, value = line.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        return fields

    @staticmethod
    def _glob_to_regex(pattern: str) -> str:
        out = []
        for ch in pattern:
            out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
        return "".join(out)

    def lookup(self, relpath: str) -> Dep5Stanza | None:
        found = None
        for stanza in self.stanzas:
            if any(r.fullmatch(relpath) for r in stanza.regexes):
                found = stanza
        return found


def _author_from_copyright(copyright_text: str) -> str:
    """'2008, Charles Barbin <x@y>' -> 'Charles Barbin' (one line per holder, joined by '; ')."""
    names = []
    for line in copyright_text.splitlines():
        line = re.sub(r"<[^>]*>", "", line)
        line = re.sub(r"^\s*(copyright\s*)?(\(c\)\s*)?[\d\s,\-–]*(?=\D)", "", line, flags=re.I)
        line = line.strip(" ,´'\"")
        if line:
            names.append(line)
    return "; ".join(names)


@dataclass
class DebPackage:
    name: str
    version: str
    deb: Path
    root: Path  # extracted file system tree
    copyright: Dep5Copyright

    @property
    def source_id(self) -> str:
        return f"debian:{self.name} {self.version}"


def _deb_version(deb: Path) -> str:
    """Version from a ``NAME_VERSION_ARCH.deb`` file name (epoch colon is URL-quoted as %3a)."""
    parts = deb.name[: -len(".deb")].split("_")
    if len(parts) != 3:
        raise ValueError(f"unexpected .deb file name {deb.name}")
    return urllib.parse.unquote(parts[1])


def _apt_size(name: str) -> int | None:
    """Download size of the candidate version according to apt-cache, or None if unknown."""
    try:
        out = subprocess.run(["apt-cache", "show", "--no-all-versions", name],
                             capture_output=True, text=True, check=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"^Size:\s*(\d+)", out, re.M)
    return int(m.group(1)) if m else None


def _fetch_deb(name: str, download_dir: Path, log: Callable[[str], None]) -> Path:
    """Return the cached ``.deb`` for ``name`` or download it with ``apt-get download``."""
    cached = sorted(download_dir.glob(f"{name}_*.deb"))
    if cached:
        return cached[-1]
    size = _apt_size(name)
    if size is None:
        raise RuntimeError(f"package {name} is not known to apt-cache")
    if size > MAX_PACKAGE_BYTES:
        raise RuntimeError(f"package {name} is too large ({size / 2**20:.0f} MiB)")
    log(f"downloading {name} ({size / 2**20:.0f} MiB)")
    download_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=download_dir, prefix=".partial-"))
    try:
        subprocess.run(["apt-get", "download", "-q", name], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=3600)
        debs = list(tmp.glob(f"{name}_*.deb"))
        if len(debs) != 1:
            raise RuntimeError(f"apt-get download {name} produced {len(debs)} .deb files")
        final = download_dir / debs[0].name
        os.replace(debs[0], final)
        return final
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"apt-get download {name} failed: {exc.stderr.decode(errors='replace').strip()}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _open_package(name: str, download_dir: Path, extract_root: Path, log: Callable[[str], None]) -> DebPackage:
    deb = _fetch_deb(name, download_dir, log)
    root = extract_root / name
    if not root.is_dir():
        extract_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=extract_root, prefix=f".{name}-"))
        try:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True, timeout=1800)
            os.replace(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    copyright_file = root / "usr/share/doc" / name / "copyright"
    text = copyright_file.read_text(encoding="utf-8", errors="replace")
    if not text.lstrip().startswith("Format:"):
        raise RuntimeError(f"{name}: copyright file is not machine-readable; licences cannot be checked")
    return DebPackage(name, _deb_version(deb), deb, root, Dep5Copyright(text))


# --------------------------------------------------------------------------------------
# Source items
# --------------------------------------------------------------------------------------
@dataclass
class Item:
    """One picture to include; ``load`` returns it as uint8 RGB."""

    key: str
    kind: str  # "content" | "style"
    package: DebPackage
    source_path: str
    licence: str
    author: str
    copyright: str
    load: Callable[[], np.ndarray]
    licence_note: str = ""
    title: str = ""


def _licensed_item(pkg: DebPackage, key: str, kind: str, install_path: str, source_rel: str,
                   load: Callable[[], np.ndarray], author: str | None = None, note: str = "", title: str = "") -> Item | None:
    """Build an Item with the licence found in the package's copyright file (None if none applies)."""
    stanza = pkg.copyright.lookup(source_rel)
    if stanza is None or not stanza.licence:
        return None
    notes = [n for n in (stanza.licence_text, " ".join(stanza.comment.split()), note) if n]
    return Item(key=key, kind=kind, package=pkg, source_path=install_path, licence=stanza.licence,
                author=author if author is not None else _author_from_copyright(stanza.copyright),
                copyright=stanza.copyright.replace("\n", "; "), load=load, licence_note=" | ".join(notes), title=title)


def _file_loader(path: Path) -> Callable[[], np.ndarray]:
    return lambda: _read_rgb(path)


def _content_photos(pkg: DebPackage, base: str, pattern: str, prefix: str,
                    exclude: frozenset[str] | set[str] = frozenset()) -> list[Item]:
    """Content items for the photos matching `pattern` under `base`, licensed per Debian copyright."""
    items = []
    for path in sorted((pkg.root / base).glob(pattern)):
        if path.name in exclude:
            continue
        rel = path.relative_to(pkg.root).as_posix()
        item = _licensed_item(pkg, f"{prefix}:{path.stem}", "content", rel, rel[len(base):], _file_loader(path))
        if item:
            items.append(item)
    return items


def _items_endless_sky(pkg: DebPackage) -> list[Item]:
    return _content_photos(pkg, "usr/share/games/endless-sky/", "images/land/*.jpg", "endless-sky",
                           _ENDLESS_SKY_EXCLUDE)


def _items_opencv(pkg: DebPackage) -> list[Item]:
    base = "usr/share/doc/opencv-doc/examples/"  # installed copy of the source tree's samples/
    data = pkg.root / base / "data"
    items = []
    for name in _OPENCV_PHOTOS:
        path = data / name
        if path.is_file():
            rel = path.relative_to(pkg.root).as_posix()
            item = _licensed_item(pkg, f"opencv-doc:{path.stem}", "content", rel, "samples/" + rel[len(base):],
                                  _file_loader(path), author="", note="covered by the package-wide 'Files: *' paragraph")
            if item:
                items.append(item)
    starry = data / "starry_night.jpg"
    if starry.is_file():
        rel = starry.relative_to(pkg.root).as_posix()
        item = _licensed_item(pkg, "opencv-doc:starry_night", "style", rel, "samples/" + rel[len(base):],
                              _file_loader(starry), author="Vincent van Gogh",
                              note="packaged scan of a public-domain painting (1889); artist not named in the package",
                              title="The Starry Night")
        if item:
            items.append(item)
    return items


def _items_plasma(pkg: DebPackage) -> list[Item]:
    items = []
    for wp in _PLASMA_PHOTOS:
        d = pkg.root / "usr/share/wallpapers" / wp
        candidates = []
        for p in (d / "contents/images").glob("*x*.*"):
            m = re.fullmatch(r"(\d+)x(\d+)\.(jpg|jpeg|png)", p.name)
            if m and int(m.group(1)) > int(m.group(2)):  # landscape variants only
                candidates.append((int(m.group(1)) * int(m.group(2)), p))
        if not candidates:
            continue
        path = max(candidates)[1]
        author, meta_lic = None, ""
        with contextlib.suppress(OSError, ValueError):
            meta = json.loads((d / "metadata.json").read_text(encoding="utf-8"))["KPlugin"]
            author = ", ".join(a.get("Name", "") for a in meta.get("Authors", []) if a.get("Name")) or None
            meta_lic = meta.get("License", "")
        rel = path.relative_to(pkg.root).as_posix()
        note = f"upstream metadata.json: License {meta_lic}" if meta_lic else ""
        item = _licensed_item(pkg, f"plasma:{wp}", "content", rel, rel[len("usr/share/wallpapers/"):],
                              _file_loader(path), author=author, note=note)
        if item:
            items.append(item)
    return items


def _items_mate(pkg: DebPackage) -> list[Item]:
    return _content_photos(pkg, "usr/share/backgrounds/mate/", "nature/*.jpg", "mate")  # the photographic set


def _items_lxqt(pkg: DebPackage) -> list[Item]:
    base = "usr/share/lxqt/"
    wall = pkg.root / base / "wallpapers"
    credits = (wall / "License").read_text(encoding="utf-8", errors="replace") if (wall / "License").is_file() else ""
    if "stefonarch" not in credits:
        return []  # credits changed: do not guess who took which photo
    m = re.search(r"creativecommons\.org/licenses/([a-z-]+)/([\d.]+)", credits)
    upstream = f"CC-{m.group(1).upper()}-{m.group(2)}" if m else "see wallpapers/License"
    items = []
    for name, author in sorted(_LXQT_PHOTOS.items()):
        path = wall / name
        if path.is_file():
            rel = path.relative_to(pkg.root).as_posix()
            item = _licensed_item(pkg, f"lxqt:{path.stem}", "content", rel, rel[len(base):], _file_loader(path),
                                  author=author, note=f"upstream {base}wallpapers/License: {upstream} (LXQt Project Team)")
            if item:
                items.append(item)
    return items


def _parse_board(qml: str) -> tuple[str, list[dict[str, str]]]:
    """Instruction text and level entries of a GCompris babymatch board file."""
    m = re.search(r'instruction\s*:\s*qsTr\("((?:[^"\\]|\\.)*)"\)', qml)
    entries = [dict(re.findall(r'"(\w+)"\s*:\s*"?([^",\n}]*)"?', block)) for block in re.findall(r"\{([^{}]*)\}", qml)]
    return (m.group(1) if m else ""), [e for e in entries if "pixmapfile" in e]


def _split_artist_title(instruction: str) -> tuple[str, str]:
    """'Katsushika Hokusai, The Great Wave off Kanagawa - 1823-1829' -> (artist, title)."""
    if ", " not in instruction:
        return "", instruction.strip()
    artist, title = instruction.split(", ", 1)
    return artist.strip(), title.strip()


def _items_gcompris(pkg: DebPackage) -> list[Item]:
    rcc_dir = "usr/share/gcompris-qt/rcc/"
    items: list[Item] = []

    # "paintings": jigsaw pieces + board files with each piece's centre on a fixed-size board.
    rcc_rel = rcc_dir + "paintings.rcc"
    rcc = RccFile.open(pkg.root / rcc_rel)
    res = "gcompris/src/activities/paintings/resource/"
    readme = rcc.read(res + "image/README").decode("utf-8", errors="replace") if res + "image/README" in rcc else ""
    lic = re.search(r"^License:\s*(.+)$", readme, re.M)
    origin = re.search(r"^Comment:\s*\n\s*(.+)$", readme, re.M)
    readme_note = "; ".join(x for x in (f"License {lic.group(1).strip()}" if lic else "",
                                        origin.group(1).strip() if origin else "") if x)
    for board in sorted(n for n in rcc.names() if n.startswith(res + "board/") and n.endswith(".qml")):
        instruction, levels = _parse_board(rcc.read(board).decode("utf-8"))
        bg = next((e for e in levels if e.get("type") == "SHAPE_BACKGROUND_IMAGE"), None)
        pieces = [e for e in levels if "x" in e and "y" in e and e.get("pixmapfile", "").endswith(".webp")]
        if bg is None or not pieces or "width" not in bg:
            continue
        stem = re.sub(r"[_-](?:[a-z]\d+|\d+)$", "", Path(pieces[0]["pixmapfile"]).stem)  # GreatWave_a1 -> GreatWave
        if stem in _GCOMPRIS_SKIP_PAINTINGS:
            continue
        artist, title = _split_artist_title(instruction)
        width, height = int(float(bg["width"])), int(float(bg["height"]))

        def load(rcc=rcc, res=res, pieces=pieces, width=width, height=height) -> np.ndarray:
            placed = [(_decode(rcc.read(res + p["pixmapfile"])), float(p["x"]) * width, float(p["y"]) * height)
                      for p in pieces]
            return reassemble_pieces(placed, width, height)

        src = f"{rcc_rel}:/{res}image/{stem}_*.webp ({len(pieces)} pieces placed by {Path(board).name})"
        piece_rel = (res + pieces[0]["pixmapfile"])[len("gcompris/"):]  # path in the source tree
        item = _licensed_item(pkg, f"gcompris:{stem}", "style", src, piece_rel, load, author=artist or None, title=title,
                              note=f"resource/image/README: {readme_note}" if readme_note else "")
        if item:
            items.append(item)

    # "details": each board shows one complete picture (Van Gogh paintings and monument photos).
    rcc_rel = rcc_dir + "details.rcc"
    rcc = RccFile.open(pkg.root / rcc_rel)
    res = "gcompris/src/activities/details/resource/"
    readme = rcc.read(res + "image/README").decode("utf-8", errors="replace") if res + "image/README" in rcc else ""
    for board in sorted(n for n in rcc.names() if n.startswith(res + "board/") and n.endswith(".qml")):
        instruction, levels = _parse_board(rcc.read(board).decode("utf-8"))
        bg = next((e for e in levels if e.get("type") == "SHAPE_BACKGROUND_IMAGE"), None)
        if bg is None:
            continue
        image = res + bg["pixmapfile"]
        stem = Path(image).stem.removesuffix("_background")
        readme_note = _details_readme_note(readme, Path(image).name)
        is_painting = instruction.lower().startswith("vincent van gogh") or "painting" in readme_note.lower()
        artist, title = _split_artist_title(instruction) if is_painting else ("", instruction)
        item = _licensed_item(pkg, f"gcompris:{stem}", "style" if is_painting else "content", f"{rcc_rel}:/{image}",
                              image[len("gcompris/"):], lambda rcc=rcc, image=image: _to_rgb(_decode(rcc.read(image))),
                              author=artist or None, title=title,
                              note=f"resource/image/README: {readme_note}" if readme_note else "")
        if item:
            if not is_painting:  # photo: the README names the photographer
                m = re.search(r"(?:photo|image) by ([^,]+),", readme_note)
                item.author = m.group(1).strip() if m else item.author
            items.append(item)
    return items


def _details_readme_note(readme: str, filename: str) -> str:
    """The README paragraph listing ``filename``, condensed to 'License: ...; Comment: ...'."""
    for para in re.split(r"\n\s*\n", readme):
        if re.search(rf"^\s*{re.escape(filename)}\s*$", para, re.M):
            lic = re.search(r"^License:\s*(.+)$", para, re.M)
            com = re.search(r"^Comment:\s*(.+)$", para, re.M)
            return "; ".join(x for x in (f"License {lic.group(1).strip()}" if lic else "", com.group(1).strip() if com else "") if x)
    return ""


_COLLECTORS: dict[str, Callable[[DebPackage], list[Item]]] = {
    "endless-sky-data": _items_endless_sky,
    "opencv-doc": _items_opencv,
    "gcompris-qt-data": _items_gcompris,
    "plasma-workspace-wallpapers": _items_plasma,
    "mate-backgrounds": _items_mate,
    "lxqt-themes": _items_lxqt,
}


# --------------------------------------------------------------------------------------
# Main entry point
# --------------------------------------------------------------------------------------
def _slug(text: str, limit: int = 60) -> str:
    text = text.replace("ü", "ue").replace("é", "e").replace("è", "e").replace("ø", "o")
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return s[:limit].rstrip("_") or "untitled"


def _manifest_is_complete(out_dir: Path, manifest: dict) -> bool:
    summary = manifest.get("summary", {})
    if summary.get("assembler_version") != ASSEMBLER_VERSION:
        return False
    files = {e["file"].split("#", 1)[0] for e in manifest.get("entries", [])}
    return bool(files) and all((out_dir / f).is_file() for f in files)


def _entry(item: Item, file: str, split: str, **extra) -> dict:
    e = {"file": file, "kind": item.kind, "split": split, "source_package": item.package.source_id,
         "source_path": item.source_path, "licence": item.licence, "author": item.author,
         "copyright": item.copyright}
    if item.title:
        e["title"] = item.title
    if item.licence_note:
        e["licence_note"] = item.licence_note
    e.update(extra)
    return e


def assemble(out_dir: Path, download_dir: Path | None = None, progress: bool = True) -> dict:
    """Download (if needed), extract and precompute the training data into out_dir; idempotent (skips work already done); returns the manifest dict."""
    out_dir = Path(out_dir)
    download_dir = Path(download_dir) if download_dir is not None else out_dir / "_downloads"
    out_dir.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        if progress:
            print(f"[data] {msg}", file=sys.stderr, flush=True)

    manifest_path = out_dir / "manifest.json"
    if manifest_path.is_file():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            if _manifest_is_complete(out_dir, manifest):
                log(f"{out_dir} is complete (manifest.json); nothing to do")
                return manifest

    # Packages are unpacked into a scratch folder next to the downloads, removed at the end.
    download_dir.mkdir(parents=True, exist_ok=True)
    extract_root = Path(tempfile.mkdtemp(dir=download_dir, prefix=".extract-"))
    skipped: list[str] = []
    packages: dict[str, str] = {}
    items: list[Item] = []
    try:
        # 1. fetch + extract the packages, collect licensed items
        for name, required in PACKAGES.items():
            try:
                pkg = _open_package(name, download_dir, extract_root, log)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                if required:
                    raise
                log(f"skipping optional package {name}: {exc}")
                skipped.append(f"package {name}: {exc}")
                continue
            found = _COLLECTORS[name](pkg)
            packages[name] = pkg.version
            log(f"{name} {pkg.version}: {sum(i.kind == 'content' for i in found)} photos, "
                f"{sum(i.kind == 'style' for i in found)} artworks")
            items.extend(found)

        contents = sorted((i for i in items if i.kind == "content"), key=lambda i: i.key)
        styles = sorted((i for i in items if i.kind == "style"), key=lambda i: i.key)

        # 2. content: deterministic held-out photos (evenly spaced in sorted order, centre crop only)
        step = max(1, len(contents) // N_HELDOUT_CONTENT)
        heldout_keys = {contents[i].key for i in range(step // 2, len(contents), step)}
        heldout_keys = set(sorted(heldout_keys)[:N_HELDOUT_CONTENT])
        train_crops, heldout_crops, entries = [], [], []
        for n, item in enumerate(contents):
            if progress and n % 50 == 0:
                log(f"content photos {n}/{len(contents)}")
            try:
                rgb = item.load()
            except (ValueError, OSError, cv2.error) as exc:
                skipped.append(f"{item.key}: unreadable ({exc})")
                continue
            if min(rgb.shape[:2]) < 200 or _is_grayscale(rgb):
                skipped.append(f"{item.key}: too small or grayscale")
                continue
            size = f"{rgb.shape[1]}x{rgb.shape[0]}"
            crops = square_crops(rgb)
            if item.key in heldout_keys:
                pos, crop = crops[len(crops) // 2]
                entries.append(_entry(item, f"content_heldout.npy#{len(heldout_crops)}", "heldout", crop=pos, source_size=size))
                heldout_crops.append(crop)
            else:
                for pos, crop in crops:
                    entries.append(_entry(item, f"content_train.npy#{len(train_crops)}", "train", crop=pos, source_size=size))
                    train_crops.append(crop)
        if not train_crops or not heldout_crops:
            raise RuntimeError("no content photos could be assembled")
        _write_npy(out_dir / "content_train.npy", np.stack(train_crops))
        _write_npy(out_dir / "content_heldout.npy", np.stack(heldout_crops))
        log(f"content: {len(train_crops)} train crops, {len(heldout_crops)} held-out crops")
        del train_crops, heldout_crops

        # 3. styles
        written: set[str] = set()
        for n, item in enumerate(styles):
            try:
                rgb = resize_max_side(item.load(), STYLE_MAX_SIDE)
            except (ValueError, OSError, cv2.error) as exc:
                skipped.append(f"{item.key}: {exc}")
                log(f"skipping style {item.key}: {exc}")
                continue
            split = "heldout" if item.key in HELDOUT_STYLE_KEYS else "train"
            label = f"{item.author} {item.title}" if item.author else (item.title or item.key.split(":", 1)[1])
            label = re.sub(r"\s*-?\s*\d{4}(?:-\d{1,4})?\.?\s*$", "", label)  # drop trailing dates
            rel = f"styles_{split}/{n:03d}_{_slug(label)}.png"
            _write_png_rgb(out_dir / rel, rgb)
            written.add(rel)
            entries.append(_entry(item, rel, split, size=f"{rgb.shape[1]}x{rgb.shape[0]}"))
        for split in ("train", "heldout"):  # remove stale outputs of earlier runs
            for old in (out_dir / f"styles_{split}").glob("*.png"):
                if f"styles_{split}/{old.name}" not in written:
                    old.unlink()
        log(f"styles: {sum(r.startswith('styles_train/') for r in written)} train, "
            f"{sum(r.startswith('styles_heldout/') for r in written)} held out")
    finally:
        shutil.rmtree(extract_root, ignore_errors=True)

    # 4. manifest
    licences: dict[str, int] = {}  # licence -> number of source pictures
    for lic in {(e["source_package"], e["source_path"]): e["licence"] for e in entries}.values():
        licences[lic] = licences.get(lic, 0) + 1
    summary = {
        "assembler_version": ASSEMBLER_VERSION,
        "crop_size": CROP_SIZE,
        "style_max_side": STYLE_MAX_SIDE,
        "counts": {
            "content_train_crops": sum(e["split"] == "train" and e["kind"] == "content" for e in entries),
            "content_heldout_crops": sum(e["split"] == "heldout" and e["kind"] == "content" for e in entries),
            "content_photos": len({(e["source_package"], e["source_path"]) for e in entries if e["kind"] == "content"}),
            "styles_train": sum(e["split"] == "train" and e["kind"] == "style" for e in entries),
            "styles_heldout": sum(e["split"] == "heldout" and e["kind"] == "style" for e in entries),
        },
        "packages": {k: packages[k] for k in sorted(packages)},
        "licences": dict(sorted(licences.items())),
        "skipped": skipped,
    }
    manifest = {"summary": summary, "entries": entries}
    atomic_write_text(out_dir / "MANIFEST.md", _markdown(manifest))
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")  # written last: marks completion
    log(f"done: {summary['counts']}")
    return manifest


def _markdown(manifest: dict) -> str:
    """Readable version of the manifest: styles one per row, content grouped by source photo."""
    s = manifest["summary"]
    esc = lambda t: str(t).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["# Training data manifest", "",
             "Assembled by `vst_engine.train.data` from Debian packages; licences are taken from each "
             "package's `/usr/share/doc/PKG/copyright` file (extra upstream statements in *note*).", "",
             "## Summary", ""]
    lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in s["counts"].items()]
    lines += ["", "Packages: " + ", ".join(f"`{k}` {v}" for k, v in s["packages"].items()), "",
              "Licences (source pictures): " + ", ".join(f"{k} ({v})" for k, v in s["licences"].items()), ""]
    if s["skipped"]:
        lines += ["Skipped:", ""] + [f"- {esc(x)}" for x in s["skipped"]] + [""]
    lines += ["## Styles", "", "| file | split | title | artist | licence | source | note |", "|---|---|---|---|---|---|---|"]
    for e in manifest["entries"]:
        if e["kind"] == "style":
            lines.append(f"| `{e['file']}` | {e['split']} | {esc(e.get('title', ''))} | {esc(e['author'])} | "
                         f"{esc(e['licence'])} | {esc(e['source_package'])}: `{esc(e['source_path'])}` | {esc(e.get('licence_note', ''))} |")
    lines += ["", "## Content photos", "",
              "| rows | split | source | author | licence | note |", "|---|---|---|---|---|---|"]
    groups: dict[tuple, list[str]] = {}
    for e in manifest["entries"]:
        if e["kind"] == "content":
            key = (e["split"], e["source_package"], e["source_path"], e["author"], e["licence"], e.get("licence_note", ""))
            groups.setdefault(key, []).append(e["file"])
    for (split, pkg, path, author, lic, note), files in groups.items():
        rows = files[0] if len(files) == 1 else f"{files[0]} … #{files[-1].split('#')[1]}"
        lines.append(f"| `{rows}` | {split} | {esc(pkg)}: `{esc(path)}` | {esc(author)} | {esc(lic)} | {esc(note)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # manual testing: python -m vst_engine.train.data OUT_DIR
    assemble(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".cache/traindata"))
