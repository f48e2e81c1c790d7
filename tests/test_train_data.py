"""Fast tests for the training-data assembler (no network, no packages needed)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from vst_engine.train import data
from vst_engine.train.qt_rcc import FLAG_COMPRESSED, FLAG_DIRECTORY, RccError, RccFile, qt_hash


# ---------------------------------------------------------------------------------------
# A tiny .rcc writer (same layout as Qt's `rcc --binary`), used to test the reader.
# ---------------------------------------------------------------------------------------
def build_rcc(files: dict[str, tuple[bytes, bool]], version: int = 3) -> bytes:
    """files: {"dir/sub/name": (payload, zlib_compress)} -> bytes of a binary resource bundle."""
    # Directory tree: {name: subtree | (payload, compress)}
    root: dict = {}
    for path, spec in files.items():
        node = root
        *dirs, leaf = path.split("/")
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = spec

    # Breadth-first numbering: children of one directory are contiguous, node 0 is the root.
    nodes: list[list] = [["", root, 0, 0]]  # [name, content, first_child, count]
    queue = [0]
    while queue:
        idx = queue.pop(0)
        content = nodes[idx][1]
        if isinstance(content, dict):
            children = sorted(content.items(), key=lambda kv: qt_hash(kv[0]))
            nodes[idx][2], nodes[idx][3] = len(nodes), len(children)
            for name, sub in children:
                nodes.append([name, sub, 0, 0])
                queue.append(len(nodes) - 1)

    names = bytearray()
    name_off: dict[str, int] = {}
    payload = bytearray()
    data_off: dict[int, int] = {}
    for i, (name, content, _, _) in enumerate(nodes):
        if i and name not in name_off:
            name_off[name] = len(names)
            enc = name.encode("utf-16-be")
            names += struct.pack(">HI", len(enc) // 2, qt_hash(name)) + enc
        if not isinstance(content, dict):
            blob, compress = content
            stored = struct.pack(">I", len(blob)) + zlib.compress(blob) if compress else blob
            data_off[i] = len(payload)
            payload += struct.pack(">I", len(stored)) + stored

    tree = bytearray()
    for i, (name, content, first, count) in enumerate(nodes):
        noff = name_off.get(name, 0) if i else 0
        if isinstance(content, dict):
            tree += struct.pack(">IHII", noff, FLAG_DIRECTORY, count, first)
        else:
            tree += struct.pack(">IHHHI", noff, FLAG_COMPRESSED if content[1] else 0, 0, 0, data_off[i])
        if version >= 2:
            tree += struct.pack(">Q", 0)

    header_len = 20 + (4 if version >= 3 else 0)
    d_off = header_len
    n_off = d_off + len(payload)
    t_off = n_off + len(names)
    header = b"qres" + struct.pack(">IIII", version, t_off, d_off, n_off)
    if version >= 3:
        header += struct.pack(">I", FLAG_COMPRESSED)
    return header + bytes(payload) + bytes(names) + bytes(tree)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_rcc_round_trip(version: int) -> None:
    files = {
        "gcompris/src/a/board.qml": (b'QtObject { property string instruction: qsTr("x") }' * 20, True),
        "gcompris/src/a/image/piece_a1.webp": (bytes(range(256)) * 3, False),
        "gcompris/src/b/README": ("Ünïcödé text\n".encode("utf-8"), True),
        "top.txt": (b"", False),
    }
    rcc = RccFile(build_rcc(files, version))
    assert rcc.version == version
    assert rcc.names() == sorted(files)
    for path, (blob, compress) in files.items():
        assert rcc.read(path) == blob
        assert rcc.entries[path].compression == ("zlib" if compress else "none")
        assert ("/" + path) in rcc
    zipped = rcc.raw("gcompris/src/a/board.qml")
    assert struct.unpack(">I", zipped[:4])[0] == len(files["gcompris/src/a/board.qml"][0])


def test_rcc_rejects_garbage(tmp_path: Path) -> None:
    with pytest.raises(RccError):
        RccFile(b"not a resource file at all")
    bad = bytearray(build_rcc({"a": (b"x", False)}))
    bad[4:8] = struct.pack(">I", 9)  # unknown format version
    with pytest.raises(RccError):
        RccFile(bytes(bad))


# ---------------------------------------------------------------------------------------
# Image helpers
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "h, w, n",
    [(360, 720, 3), (480, 640, 1), (1600, 2560, 2), (900, 400, 3), (50, 100, 3), (1000, 1600, 2), (288, 288, 1)],
)
def test_square_crops_shape_and_dtype(h: int, w: int, n: int) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    crops = data.square_crops(img)
    assert len(crops) == n
    for name, crop in crops:
        assert name in {"start", "centre", "end"}
        assert crop.shape == (data.CROP_SIZE, data.CROP_SIZE, 3)
        assert crop.dtype == np.uint8
        assert crop.flags["C_CONTIGUOUS"]


def test_square_crops_cover_both_ends() -> None:
    img = np.zeros((360, 720, 3), np.uint8)
    img[:, :10] = 255  # white strip at the far left, black elsewhere
    (n0, first), *_, (n1, last) = data.square_crops(img)
    assert (n0, n1) == ("start", "end")
    assert first[:, 0].mean() > 200 and last[:, -1].mean() < 5


def test_resize_max_side() -> None:
    img = np.zeros((600, 752, 3), np.uint8)
    out = data.resize_max_side(img, 512)
    assert max(out.shape[:2]) == 512 and out.shape[2] == 3
    small = np.zeros((100, 50, 3), np.uint8)
    assert data.resize_max_side(small, 512) is small  # never enlarges


def test_reassemble_pieces_restores_picture() -> None:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:60, 0:80]
    picture = np.stack([xx * 3, yy * 4, (xx + yy) * 2], -1).astype(np.uint8)  # BGR
    picture = np.clip(picture.astype(int) + rng.integers(0, 5, picture.shape), 0, 255).astype(np.uint8)
    pieces = []
    for y0 in (0, 30):
        for x0 in (0, 40):
            tile = picture[y0:y0 + 30, x0:x0 + 40]
            bgra = np.dstack([tile, np.full(tile.shape[:2], 255, np.uint8)])
            pieces.append((bgra, 100 + x0 + 20, 50 + y0 + 15))  # centre on a larger board
    rgb = data.reassemble_pieces(pieces[::-1], width=300, height=200)
    assert rgb.shape == (60, 80, 3)
    np.testing.assert_array_equal(rgb, picture[..., ::-1])


def test_reassemble_pieces_rejects_gaps() -> None:
    tile = np.full((10, 10, 3), 128, np.uint8)
    with pytest.raises(ValueError):
        data.reassemble_pieces([(tile, 5, 5), (tile, 45, 5)], width=60, height=10)  # 30 px gap


# ---------------------------------------------------------------------------------------
# Metadata helpers
# ---------------------------------------------------------------------------------------
def test_dep5_last_matching_paragraph_wins() -> None:
    text = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: Someone
License: GPL-3+

Files: images/land/*
Copyright: Various
License: public-domain
 Taken from a public-domain collection.

Files: images/land/*-harro*
Copyright: @harro.eu (copyright@harro.eu)
License: CC-BY-SA-4.0

License: CC-BY-SA-4.0
 Long licence text.
"""
    dep5 = data.Dep5Copyright(text)
    assert dep5.lookup("images/land/beach0.jpg").licence == "public-domain"
    assert dep5.lookup("images/land/beach0.jpg").licence_text == "Taken from a public-domain collection."
    assert dep5.lookup("images/land/beach11-harro.jpg").licence == "CC-BY-SA-4.0"
    assert dep5.lookup("sounds/x.wav").licence == "GPL-3+"
    assert data._author_from_copyright("2008, Charles Barbin <barbinch@free.fr>´") == "Charles Barbin"


def test_deb_version_and_board_parsing() -> None:
    assert data._deb_version(Path("plasma-workspace-wallpapers_4%3a5.27.5-2_all.deb")) == "4:5.27.5-2"
    qml = '''QtObject {
       property string instruction: qsTr("Katsushika Hokusai, The Great Wave off Kanagawa - 1823-1829")
       property var levels : [
          { "pixmapfile" : "image/bg.svg", "type" : "SHAPE_BACKGROUND_IMAGE", "width": 702, "height": 515 },
          { "pixmapfile" : "image/GreatWave_a1.webp", "x" : "0.125", "y" : "0.197" }
       ]
    }'''
    instruction, levels = data._parse_board(qml)
    assert data._split_artist_title(instruction) == ("Katsushika Hokusai", "The Great Wave off Kanagawa - 1823-1829")
    assert levels[0]["width"] == "702" and levels[0]["type"] == "SHAPE_BACKGROUND_IMAGE"
    assert levels[1] == {"pixmapfile": "image/GreatWave_a1.webp", "x": "0.125", "y": "0.197"}
