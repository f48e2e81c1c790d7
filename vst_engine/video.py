"""Frame sources (video files, image folders) and sinks (PNG folders, encoded videos).

Frames are numpy uint8 arrays of shape (H, W, 3) in RGB order. Decoding goes
through OpenCV; encoding and audio probing/muxing through the ffmpeg binary that
ships with imageio-ffmpeg, so no system ffmpeg is needed.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from .atomic import atomic_write_bytes
from .errors import VstError

# Keep FFmpeg's and OpenCV's own log lines off the terminal: errors are reported as VstError.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
getattr(cv2, "setLogLevel", lambda level: None)(2)  # OpenCV 5 dropped it

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
ALPHA_IMAGE_EXTS = (".png", ".tif", ".tiff", ".webp")  # image outputs that keep a clip's alpha
DEFAULT_FOLDER_FPS = 25.0

# Audio codecs that may be stream-copied into each container family.
_MP4_AUDIO = frozenset({"aac", "mp3", "alac", "ac3", "eac3"})
_MKV_AUDIO = _MP4_AUDIO | {"opus", "vorbis", "flac", "pcm_s16le", "pcm_s24le"}
# Output container -> (video encoders by preference, copyable audio, audio encoder otherwise).
_CONTAINERS: dict[str, tuple[tuple[str, ...], frozenset[str], str]] = {
    ".mp4": (("libx264", "mpeg4"), _MP4_AUDIO | {"opus"}, "aac"),
    ".m4v": (("libx264", "mpeg4"), _MP4_AUDIO, "aac"),
    ".mov": (("libx264", "mpeg4"), _MP4_AUDIO | {"pcm_s16le", "pcm_s24le"}, "aac"),
    ".mkv": (("libx264", "mpeg4"), _MKV_AUDIO, "aac"),
    # AAC in AVI is poorly supported by players; uncompressed PCM plays everywhere.
    ".avi": (("mjpeg",), frozenset({"mp3", "ac3", "mp2", "pcm_s16le"}), "pcm_s16le"),
    ".webm": (("libvpx-vp9", "libvpx"), frozenset({"opus", "vorbis"}), "libopus"),
}
SUPPORTED_VIDEO_EXTS = tuple(_CONTAINERS)

# Convert with (and tag) the BT.601 matrix: OpenCV and other swscale-based readers
# decode as BT.601 whatever the tag says, so this round-trips; tag-aware players agree.
_BT601 = ["-colorspace", "smpte170m"]
_VIDEO_OPTS: dict[str, list[str]] = {
    "libx264": ["-pix_fmt", "yuv420p", "-crf", "16", "-preset", "medium", *_BT601],
    "mpeg4": ["-pix_fmt", "yuv420p", "-q:v", "2"],
    "mjpeg": ["-q:v", "2"],  # ffmpeg picks full-range 4:4:4 JPEG for RGB input
    "libvpx-vp9": ["-pix_fmt", "yuv420p", "-crf", "20", "-b:v", "0", "-deadline", "good",
                   "-cpu-used", "2", "-row-mt", "1", *_BT601],
    "libvpx": ["-pix_fmt", "yuv420p", "-crf", "10", "-b:v", "4M"],
}
_AUDIO_OPTS: dict[str, list[str]] = {"aac": ["-b:a", "192k"], "libopus": ["-b:a", "160k"]}
# 4:2:0 H.264 / MPEG-4 part 2 cannot encode odd sizes; VP9 and MJPEG can.
_NEEDS_EVEN = {"libx264", "mpeg4"}


@dataclass
class ClipInfo:
    fps: float
    count: int        # true number of decodable frames in the whole clip
    width: int
    height: int
    has_audio: bool
    path: Path
    has_alpha: bool = False  # images with an alpha channel (folders of PNG, TIFF, WebP ...)


# --------------------------------------------------------------------------- ffmpeg


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # missing package or binary
        raise VstError(f"ffmpeg is not available (imageio-ffmpeg): {exc}") from None


@lru_cache(maxsize=1)
def _encoders() -> frozenset[str]:
    try:
        out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VstError(f"cannot run ffmpeg ({ffmpeg_exe()}): {exc}") from None
    return frozenset(m.group(1) for m in re.finditer(r"^\s*[VAS][.A-Z]{5}\s+(\S+)", out, re.M))


def _audio_codecs(path: Path) -> list[str]:
    """Codec names of the audio streams of `path` ([] if none or not probeable)."""
    if not path.is_file():
        return []
    try:
        # Without an output ffmpeg exits non-zero, but still prints the stream list.
        err = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             errors="replace", timeout=60).stderr
    except (OSError, subprocess.TimeoutExpired, VstError):  # no ffmpeg: reading still works through OpenCV
        return []
    return re.findall(r"Stream #\d+:\d+.*?: Audio: (\w+)", err)


def _fps_arg(fps: float) -> str:
    """Exact rate for ffmpeg: NTSC-style rates become N*1000/1001 (29.97 -> 30000/1001)."""
    ntsc = round(fps * 1.001)
    if ntsc > 0 and abs(fps - ntsc * 1000 / 1001) < 0.002 and abs(fps - round(fps)) > 0.002:
        return f"{ntsc * 1000}/1001"
    frac = Fraction(fps).limit_denominator(1001)
    return str(frac.numerator) if frac.denominator == 1 else f"{frac.numerator}/{frac.denominator}"


# --------------------------------------------------------------------------- helpers


def natural_key(name: str) -> list:
    # "frame2" < "frame10": digits compare as numbers; str/int alternate so keys compare.
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def is_folder_output(path: str | Path) -> bool:
    text = str(path)
    seps = (os.sep, "/") + ((os.altsep,) if os.altsep else ())
    return text.endswith(seps) or Path(text).is_dir()


def read_image(path: str | Path) -> np.ndarray:
    """Read any OpenCV-supported image as RGB uint8 (alpha dropped, 16-bit reduced)."""
    path = Path(path)
    if path.is_dir():
        raise VstError(f"{path} is a folder, not an image")
    if not path.is_file():
        raise VstError(f"image not found: {path}")
    try:
        data = np.fromfile(path, dtype=np.uint8)  # works with non-ASCII paths, unlike imread
    except OSError as exc:
        raise VstError(f"cannot read image {path}: {exc.strerror or exc}") from None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise VstError(f"not a readable image: {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_alpha(path: str | Path) -> np.ndarray | None:
    """An image's alpha channel as H x W uint8 (16-bit and float alpha scaled), or None if it has none."""
    try:
        img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except OSError as exc:
        raise VstError(f"cannot read image {path}: {exc.strerror or exc}") from None
    if img is None or img.ndim != 3 or img.shape[2] != 4:
        return None
    alpha = img[..., 3]
    if alpha.dtype == np.uint8:
        return np.ascontiguousarray(alpha)
    scale = 255.0 / 65535.0 if alpha.dtype == np.uint16 else 255.0
    return (np.clip(alpha.astype(np.float32) * scale, 0, 255) + 0.5).astype(np.uint8)


def parse_frame_range(text: str, count: int | None = None) -> tuple[int, int | None]:
    """Parse "A:B" (0-based, B exclusive), "A:" or ":B".

    With `count` the range is checked against the clip and an open end becomes
    `count`; without it an open end is returned as None (meaning "to the end").
    """
    m = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", text or "")
    if not m:
        raise VstError(f"invalid frame range {text!r}: expected A:B, A: or :B with 0-based "
                       "frame numbers (B excluded)")
    start = int(m.group(1)) if m.group(1) else 0
    end = int(m.group(2)) if m.group(2) else count
    _check_range(start, end, count)
    return start, end


def _check_range(start: int, end: int | None, count: int | None) -> None:
    # "Outside" first: "20:" on a 16-frame clip is a range problem, not an empty one.
    if count is not None and (start < 0 or start >= count or (end or 0) > count):
        raise VstError(f"frame range {start}:{end} is outside the clip (0:{count})")
    if end is not None and end <= start:
        raise VstError(f"frame range {start}:{end} is empty")


# --------------------------------------------------------------------------- sources


class FrameSource:
    """A clip, restricted to a selected range of frames. Use `open_source`."""

    info: ClipInfo

    def __init__(self, info: ClipInfo, frames: tuple[int, int | None] | str | None) -> None:
        self.info = info
        if info.count <= 0:
            raise VstError(f"clip has no frames: {info.path}")
        if isinstance(frames, str):
            frames = parse_frame_range(frames, info.count)
        start, end = frames if frames is not None else (0, None)
        end = info.count if end is None else end
        _check_range(start, end, info.count)
        self._range = range(start, end)

    def indices(self) -> range:
        return self._range

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        for i in self._range:
            yield i, self.read(i)

    def __len__(self) -> int:
        return len(self._range)

    def read(self, index: int) -> np.ndarray:
        if not 0 <= index < self.info.count:
            raise VstError(f"frame {index} is outside the clip (0:{self.info.count}): "
                           f"{self.info.path}")
        return self._load(index)

    def _load(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def read_alpha(self, index: int) -> np.ndarray | None:
        """Frame `index`'s alpha channel (H x W uint8), or None where the clip has none."""
        return None

    def close(self) -> None:
        pass

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _FolderSource(FrameSource):
    def __init__(self, path: Path, files: list[Path], fps: float,
                 frames: tuple[int, int | None] | str | None) -> None:
        self._files = files
        first = read_image(files[0])
        h, w = first.shape[:2]
        super().__init__(ClipInfo(fps, len(files), w, h, False, path, read_alpha(files[0]) is not None), frames)

    def read_alpha(self, index: int) -> np.ndarray | None:
        alpha = read_alpha(self._files[index]) if self.info.has_alpha else None
        if alpha is not None and alpha.shape != (self.info.height, self.info.width):
            raise VstError(f"image {self._files[index]} is {alpha.shape[1]}x{alpha.shape[0]}, but the "
                           f"sequence is {self.info.width}x{self.info.height}")
        return alpha

    def _load(self, index: int) -> np.ndarray:
        # Sizes are checked as frames are read: decoding a whole folder up front
        # just to compare sizes would double the I/O of long sequences.
        rgb = read_image(self._files[index])
        if rgb.shape[:2] != (self.info.height, self.info.width):
            raise VstError(f"image {self._files[index]} is {rgb.shape[1]}x{rgb.shape[0]}, but the "
                           f"sequence is {self.info.width}x{self.info.height}")
        return rgb


class _VideoSource(FrameSource):
    def __init__(self, path: Path, frames: tuple[int, int | None] | str | None) -> None:
        self._path = path
        self._cap: cv2.VideoCapture | None = None
        self._pos = 0                      # index of the frame the next grab() returns
        self._cached: tuple[int, np.ndarray] | None = None
        cap = self._open()
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and fps > 0 and np.isfinite(fps) else DEFAULT_FOLDER_FPS
        claimed = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        ok, first = cap.read()
        if not ok or first is None:
            self.close()
            raise VstError(f"clip has no decodable frames: {path}")
        self._pos = 1
        self._cached = (0, cv2.cvtColor(first, cv2.COLOR_BGR2RGB))
        # Size from a decoded frame: it accounts for rotation metadata applied by OpenCV.
        h, w = first.shape[:2]
        try:
            count = self._count_frames(claimed)
            super().__init__(ClipInfo(float(fps), count, w, h, bool(_audio_codecs(path)), path),
                             frames)
        except BaseException:
            self.close()
            raise

    def _open(self) -> cv2.VideoCapture:
        self.close()
        cap = cv2.VideoCapture(str(self._path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise VstError(f"not a readable video: {self._path}")
        self._cap, self._pos = cap, 0
        return cap

    def _count_frames(self, claimed: int) -> int:
        # CAP_PROP_FRAME_COUNT comes from container metadata and can be wrong
        # (estimated from duration, edit lists...). Trust it only if the last
        # claimed frame decodes and nothing follows it; otherwise count by grabbing.
        probe = cv2.VideoCapture(str(self._path), cv2.CAP_FFMPEG)
        try:
            if (claimed > 1 and probe.set(cv2.CAP_PROP_POS_FRAMES, claimed - 1)
                    and probe.grab() and not probe.grab()):
                return claimed
            probe.release()
            probe = cv2.VideoCapture(str(self._path), cv2.CAP_FFMPEG)
            count = 0
            while probe.grab():
                count += 1
            return count
        finally:
            probe.release()

    def _load(self, index: int) -> np.ndarray:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1].copy()
        # Decode sequentially rather than seeking: OpenCV's frame seeking is not
        # frame-accurate for every codec, and read() must match iteration exactly.
        if self._cap is None or index < self._pos:
            self._open()
        assert self._cap is not None
        while self._pos < index:
            if not self._cap.grab():
                raise VstError(f"could not decode frame {self._pos} of {self._path}")
            self._pos += 1
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise VstError(f"could not decode frame {index} of {self._path}")
        self._pos += 1
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        self._cached = (index, rgb)
        return rgb.copy()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def open_source(path: str | Path, frames: tuple[int, int | None] | str | None = None, *,
                fps: float | None = None) -> FrameSource:
    """Open a video file, an image folder (natural order) or a single image.

    `frames` selects a sub-range: (start, end) 0-based with end exclusive (None =
    to the end) or a string for `parse_frame_range`. `fps` sets the rate of
    image sequences (default 25); a video's rate always comes from its container.
    """
    path = Path(path)
    if fps is not None and not fps > 0:
        raise VstError(f"invalid frame rate {fps} for {path}")
    if not path.exists():
        raise VstError(f"input not found: {path}")
    if path.is_dir():
        try:
            # Dot-files are skipped: they include our own in-progress temporaries.
            files = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS
                     and not p.name.startswith(".") and p.is_file()]
        except OSError as exc:
            raise VstError(f"cannot list folder {path}: {exc.strerror or exc}") from None
        if not files:
            raise VstError(f"no images ({', '.join(IMAGE_EXTS)}) in folder {path}")
        files.sort(key=lambda p: natural_key(p.name))
        return _FolderSource(path, files, fps or DEFAULT_FOLDER_FPS, frames)
    if path.suffix.lower() in IMAGE_EXTS:
        return _FolderSource(path, [path], fps or DEFAULT_FOLDER_FPS, frames)
    if not os.access(path, os.R_OK):
        raise VstError(f"input is not readable: {path}")
    return _VideoSource(path, frames)


# --------------------------------------------------------------------------- sinks


class FrameSink:
    """Destination for frames. Use `open_sink`; `close` finalizes, `abort` discards."""

    keeps_alpha = False  # whether `write`'s alpha reaches the output
    single_frame = False  # an image file: one frame only

    def __init__(self, path: Path, fps: float, width: int, height: int) -> None:
        self.path, self.fps, self.width, self.height = path, fps, width, height
        self.encoded_size = (width, height)  # what the file holds (codecs may need even sizes)

    def _encode(self, ext: str, rgb: np.ndarray, alpha: np.ndarray | None, params: Sequence[int] = ()) -> bytes:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if alpha is not None:  # straight (not premultiplied) alpha: RGB stays as stylized
            bgr = np.dstack([bgr, alpha])
        ok, data = cv2.imencode(ext, bgr, list(params))
        if not ok:
            raise VstError(f"could not encode a frame as {ext[1:].upper()} for {self.path}")
        return data.tobytes()

    def _check_frame(self, rgb: np.ndarray) -> None:
        if rgb.dtype != np.uint8 or rgb.shape != (self.height, self.width, 3):
            raise VstError(f"frame of shape {rgb.shape} ({rgb.dtype}) does not match the output "
                           f"{self.path} ({self.width}x{self.height} RGB uint8)")

    def write(self, index: int, rgb: np.ndarray, alpha: np.ndarray | None = None) -> None:
        """Write frame `index`; `alpha` (H x W uint8) is kept where the format has an alpha channel."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def __enter__(self) -> FrameSink:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _FolderSink(FrameSink):
    """One `{index:06d}.png` per frame, so runs over different ranges fill one folder."""

    keeps_alpha = True

    def __init__(self, path: Path, fps: float, width: int, height: int, created: bool) -> None:
        super().__init__(path, fps, width, height)
        self.created = created

    def abort(self) -> None:
        # A run that failed before its first frame leaves no empty folder of its own behind.
        if self.created and not any(self.path.iterdir()):
            self.path.rmdir()

    def write(self, index: int, rgb: np.ndarray, alpha: np.ndarray | None = None) -> None:
        self._check_frame(rgb)
        _write_file(self.path / f"{index:06d}.png", self._encode(".png", rgb, alpha))


class _ImageSink(FrameSink):
    """One still image (a single-frame run), written whole when the run completes."""

    single_frame = True

    def __init__(self, path: Path, fps: float, width: int, height: int) -> None:
        super().__init__(path, fps, width, height)
        self.ext = path.suffix.lower()
        self.keeps_alpha = self.ext in ALPHA_IMAGE_EXTS
        self._data: bytes | None = None

    def write(self, index: int, rgb: np.ndarray, alpha: np.ndarray | None = None) -> None:
        self._check_frame(rgb)
        if self._data is not None:
            raise VstError(f"an image output holds one frame: {self.path}")
        # Full-resolution colour: brush strokes lose their colour edges under 4:2:0 (mean error 8.3
        # against 2.8 grey levels on a 64x48 stylized frame at quality 95).
        params = (cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                  cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444) if self.ext in (".jpg", ".jpeg") else ()
        self._data = self._encode(self.ext, rgb, alpha if self.keeps_alpha else None, params)

    def close(self) -> None:
        if self._data is None:
            raise VstError(f"no frame was stylized for {self.path}")
        _write_file(self.path, self._data)


def _write_file(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise VstError(f"cannot write {path}: {exc.strerror or exc}") from None


class _VideoSink(FrameSink):
    def __init__(self, path: Path, fps: float, width: int, height: int,
                 audio_from: Path | None, start_time: float) -> None:
        super().__init__(path, fps, width, height)
        ext = path.suffix.lower()
        encoders, copyable, audio_encoder = _CONTAINERS[ext]
        codec = next((c for c in encoders if c in _encoders()), None)
        if codec is None:
            raise VstError(f"the bundled ffmpeg has no encoder for {path.suffix} "
                           f"(tried {', '.join(encoders)})")
        # Odd sizes: replicate the last row/column (1 px) rather than pad with black.
        self._pad = (height % 2, width % 2) if codec in _NEEDS_EVEN else (0, 0)
        self.encoded_size = (width + self._pad[1], height + self._pad[0])
        # Hidden temporaries next to the output (same filesystem, so os.replace is atomic).
        self._tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
        self._video_tmp = path.with_name(f".{path.stem}.partial-video{path.suffix}")
        self._faststart = ["-movflags", "+faststart"] if ext in (".mp4", ".m4v", ".mov") else []
        codecs = _audio_codecs(audio_from) if audio_from is not None else []
        self._audio: list[str] = []
        if codecs:
            # Stream copy cannot start mid-packet (and with sparse seek indexes, e.g. MKV,
            # ffmpeg keeps everything before the seek point): re-encode to offset exactly.
            copy = start_time <= 0 and all(c in copyable for c in codecs)
            self._audio = (["-ss", f"{start_time:.6f}"] if start_time > 0 else []) + [
                "-i", str(audio_from), "-map", "0:v", "-map", "1:a?",
                *(["-c:a", "copy"] if copy else ["-c:a", audio_encoder,
                                                 *_AUDIO_OPTS.get(audio_encoder, [])])]
        self._first: int | None = None
        self._last: int | None = None
        self._last_bytes = b""
        self._done = False

        # With audio, video is encoded alone and muxed on close: only then is the
        # length known, and "-shortest" would cut the video if the audio ends early.
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{width + self._pad[1]}x{height + self._pad[0]}",
               "-r", _fps_arg(fps), "-i", "-", "-map", "0:v", "-c:v", codec, *_VIDEO_OPTS[codec],
               *([] if self._audio else self._faststart),
               str(self._video_tmp if self._audio else self._tmp)]
        # stderr to a file, not a pipe: a full pipe would block ffmpeg while we write stdin.
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                          stdout=subprocess.DEVNULL, stderr=self._stderr)
        except OSError as exc:
            self._stderr.close()
            raise VstError(f"cannot start ffmpeg for {path}: {exc}") from None

    def _fail(self, stderr: str) -> VstError:
        """Discard everything and build the error from ffmpeg's last message line."""
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        self.abort()
        return VstError(f"ffmpeg failed writing {self.path}: "
                        f"{lines[-1] if lines else 'exit code ' + str(self._proc.returncode)}")

    def _encoder_stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def write(self, index: int, rgb: np.ndarray, alpha: np.ndarray | None = None) -> None:
        # The video codecs used here have no alpha channel: the frame is written opaque.
        if self._done:
            raise VstError(f"output {self.path} is already closed")
        if self._last is not None and index <= self._last:
            raise VstError(f"frames for video {self.path} must be written in increasing order "
                           f"(got {index} after {self._last})")
        self._check_frame(rgb)
        if any(self._pad):
            rgb = np.pad(rgb, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
        data = np.ascontiguousarray(rgb).tobytes()
        # A gap in the indices repeats the previous frame so timing and audio stay in sync.
        gap = index - self._last - 1 if self._last is not None else 0
        try:
            assert self._proc.stdin is not None
            for _ in range(gap):
                self._proc.stdin.write(self._last_bytes)
            self._proc.stdin.write(data)
        except OSError:  # BrokenPipeError: ffmpeg died
            self._proc.wait()
            raise self._fail(self._encoder_stderr()) from None
        if self._first is None:
            self._first = index
        self._last, self._last_bytes = index, data

    def close(self) -> None:
        if self._done:
            return
        if self._first is None or self._last is None:
            self.abort()
            raise VstError(f"no frames were written to {self.path}")
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
        except OSError:
            pass  # ffmpeg already gone; its exit code tells why
        if self._proc.wait() != 0:
            raise self._fail(self._encoder_stderr())
        if self._audio:
            # Cut the audio to the video's exact length; the video stream is copied.
            duration = (self._last - self._first + 1) / self.fps
            cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
                   "-i", str(self._video_tmp), *self._audio, "-c:v", "copy",
                   "-t", f"{duration:.6f}", *self._faststart, str(self._tmp)]
            try:
                mux = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
            except OSError as exc:
                raise self._fail(str(exc)) from None
            if mux.returncode != 0:
                raise self._fail(mux.stderr.decode(errors="replace"))
            self._video_tmp.unlink(missing_ok=True)
        try:
            os.replace(self._tmp, self.path)
        except OSError as exc:
            raise self._fail(f"cannot rename to the final name: {exc.strerror or exc}") from None
        self._done = True
        self._stderr.close()

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        except OSError:
            pass
        self._stderr.close()
        self._tmp.unlink(missing_ok=True)
        self._video_tmp.unlink(missing_ok=True)


def check_writable_dir(folder: Path, target: Path) -> None:
    """Fail with one line unless `folder` exists and a file can be created in it (for `target`)."""
    if not folder.is_dir():
        raise VstError(f"output folder does not exist: {folder} (for {target})")
    try:  # actually try: os.access is wrong for root, ACLs and read-only mounts
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise VstError(f"output folder is not writable: {folder} ({exc.strerror or exc})") from None


def open_sink(path: str | Path, fps: float, width: int, height: int,
              audio_from: Path | None = None, start_time: float = 0.0) -> FrameSink:
    """Folder of PNGs if `is_folder_output(path)`, one image for an image extension (a single
    frame), else a video encoded by extension.

    For videos, the audio of `audio_from` (if any) is muxed in starting at
    `start_time` seconds, and the file appears under its final name only on close().
    """
    folder_out = is_folder_output(path)
    path = Path(path)
    if not (fps > 0 and width > 0 and height > 0):
        raise VstError(f"invalid output format {width}x{height} @ {fps} fps for {path}")
    if folder_out:
        if path.exists() and not path.is_dir():
            raise VstError(f"output folder is an existing file: {path}")
        created = not path.exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VstError(f"cannot create output folder {path}: {exc.strerror or exc}") from None
        check_writable_dir(path, path)
        return _FolderSink(path, fps, width, height, created)
    if path.suffix.lower() not in SUPPORTED_VIDEO_EXTS + IMAGE_EXTS:
        raise VstError(f"unsupported output extension {path.suffix or '(none)'!r} for {path}: use "
                       f"{', '.join(SUPPORTED_VIDEO_EXTS)}, an image ({', '.join(IMAGE_EXTS)}) for one frame, "
                       "or a folder path ending in '/'")
    check_writable_dir(path.parent, path)
    if path.suffix.lower() in IMAGE_EXTS:
        return _ImageSink(path, fps, width, height)
    return _VideoSink(path, fps, width, height,
                      Path(audio_from) if audio_from is not None else None, start_time)
