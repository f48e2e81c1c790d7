#!/usr/bin/env python3
"""Regenerate the bundled style presets (developer tool; not shipped in the add-on zip).

Takes the public-domain artworks from the training data assembled by `build.py train`
(.cache/traindata, from Debian packages), resizes them to at most 512 px (JPEG) with 128 px
thumbnails, and writes presets.json and MANIFEST.md. Needs OpenCV (the repo's .venv has it):

    .venv/bin/python blender_addon/make_presets.py
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".cache" / "traindata"
OUT = Path(__file__).resolve().parent / "video_style_transfer" / "presets"
PUBLIC_DOMAIN = re.compile(r"\bpublic[ -]domain\b", re.I)


# Famous artworks that are themselves in the public domain (the artists died before 1950), whose
# reproductions in the Debian packages carry a free licence compatible with the add-on's GPL-3+.
PD_ARTWORKS = {
    "styles_heldout/006_katsushika_hokusai_the_great_wave_off_kanagawa.png": "Hokusai (1760-1849)",
    "styles_heldout/029_vincent_van_gogh_the_starry_night.png": "Van Gogh (1853-1890)",
    "styles_train/026_wassily_kandinsky_composition_viii.png": "Kandinsky (1866-1944), published 1923",
}


def licence_text(entry: dict) -> str:
    if entry["file"] in PD_ARTWORKS:
        return (f"Artwork in the public domain ({PD_ARTWORKS[entry['file']]}); this reproduction: "
                f"{entry['licence']} per the package's Debian copyright file")
    return (f"Public domain (upstream statement: \"{entry['licence_note']}\"; Debian copyright file of the "
            f"package: {entry['licence']})")


def is_public_domain(entry: dict) -> bool:
    """The manifest's licence, or the upstream licence statement it quotes, says public domain."""
    if PUBLIC_DOMAIN.search(entry.get("licence", "")):
        return True
    note = entry.get("licence_note", "")
    return bool(re.search(r"License\s+Public domain", note, re.I))


def resized(img, side: int):
    h, w = img.shape[:2]
    s = min(1.0, side / max(h, w))
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def main() -> None:
    manifest = json.loads((DATA / "manifest.json").read_text())
    entries = [e for e in manifest["entries"]
               if e["kind"] == "style" and (is_public_domain(e) or e["file"] in PD_ARTWORKS)]
    (OUT / "thumbs").mkdir(parents=True, exist_ok=True)
    presets, rows = [], []
    for e in entries:
        pid = re.sub(r"^\d+_(vincent_|wassily_|katsushika_)?", "", Path(e["file"]).stem)
        img = cv2.imread(str(DATA / e["file"]), cv2.IMREAD_COLOR)
        cv2.imwrite(str(OUT / f"{pid}.jpg"), resized(img, 512), [cv2.IMWRITE_JPEG_QUALITY, 90])
        cv2.imwrite(str(OUT / "thumbs" / f"{pid}.jpg"), resized(img, 128), [cv2.IMWRITE_JPEG_QUALITY, 85])
        title = re.sub(r"\s*[-–]?\s*\d{4}(-\d+)?\.?$", "", e["title"]).strip()
        presets.append({"id": pid, "title": title, "author": e["author"], "file": f"{pid}.jpg",
                        "thumb": f"thumbs/{pid}.jpg"})
        rows.append(f"| `{pid}.jpg` | {e['title']} | {e['author']} | {licence_text(e)} | "
                    f"{e['source_package']}: `{e['source_path']}` |")
    (OUT / "presets.json").write_text(json.dumps(presets, indent=1, ensure_ascii=False) + "\n")
    text = [
        "# Bundled style presets",
        "",
        "Public-domain paintings, resized to at most 512 px (JPEG) with 128 px thumbnails in `thumbs/`.",
        "Source: the training data assembled from Debian packages (`.cache/traindata/manifest.json`),",
        "regenerated with `blender_addon/make_presets.py`. Only entries whose licence statement is",
        "public domain are taken: the Van Gogh reproductions of GCompris' *details* activity, whose",
        "`resource/image/README` says \"License Public domain; based on an original painting by Van Gogh,",
        "Public domain image\" (the package's Debian copyright file lists the activity under GPL-3; the",
        "paintings themselves, 1887-1890, are in the public domain); and three famous works in the",
        "public domain whose reproductions come under a free licence compatible with the add-on's",
        "GPL-3.0-or-later (Hokusai's Great Wave and Kandinsky's Composition VIII from GCompris'",
        "*paintings* activity, GPL-3+; Van Gogh's Starry Night from opencv-doc's examples).",
        "",
        "| file | title | author | licence | source package and path |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]
    (OUT / "MANIFEST.md").write_text("\n".join(text))
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"{len(presets)} presets, {total / 1e6:.2f} MB in {OUT}")


if __name__ == "__main__":
    main()
