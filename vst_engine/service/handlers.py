"""What the service does with each validated request: the engine calls behind the protocol."""
from __future__ import annotations

import hashlib
import mmap
import os
import re
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .. import engine_version
from ..deflicker import apply_correction
from ..engine import Engine, StyleSet, process_size, resize_frame
from ..errors import VstError
from ..features import GlobalFeatures, load_shots, sample_indices, shots_to_bytes
from ..shots import ShotAnalyses
from ..atomic import atomic_write_bytes
from . import protocol as P

MAX_SESSIONS = 4
SESSION_IDLE_S = 600
CACHE_ITEMS = 8
FEATURES_ID = re.compile(r"[0-9a-f]{64}")


def default_features_dir() -> Path:
    env = os.environ.get("VST_FEATURES_DIR")
    return Path(env) if env else Path.home() / ".cache" / "vst_engine" / "features"


class SharedImage:
    """A client's RGBA frame in shared memory, mapped for the duration of one request."""

    def __init__(self, fd: int, desc: P.ImageDesc) -> None:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise P.ProtocolError(P.E_INVALID, "the attached descriptor is not shared memory")
        if info.st_size < desc.nbytes:
            raise P.ProtocolError(P.E_INVALID, f"shared memory holds {info.st_size} bytes, the image needs {desc.nbytes}")
        _require_shrink_seal(fd)
        try:
            self.map = mmap.mmap(fd, desc.nbytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except (OSError, ValueError) as exc:
            raise P.ProtocolError(P.E_INVALID, f"cannot map the shared memory read-write: {exc}") from None
        dtype = np.uint8 if desc.depth == 1 else np.float32
        self.pixels = np.frombuffer(self.map, dtype=dtype).reshape(desc.height, desc.width, 4)

    def rgb(self) -> np.ndarray:
        """A private copy of the colour channels (uint8, or float32 clamped to [0, 1])."""
        rgb = np.array(self.pixels[..., :3])
        if rgb.dtype == np.float32:
            np.nan_to_num(rgb, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
            np.clip(rgb, 0.0, 1.0, out=rgb)
        return rgb

    def put_rgb(self, rgb: np.ndarray) -> None:
        self.pixels[..., :3] = rgb

    def close(self) -> None:
        del self.pixels
        self.map.close()


def _features_size(feats: GlobalFeatures, size: tuple[int, int]) -> tuple[int, int]:
    """Process at the analysed size when only the scale differs (a host's proxy or preview
    resolution): the features then still fit, and the result is scaled to the host's frame."""
    fw, fh = feats.process_size
    w, h = size
    if (fw, fh) != (w, h) and abs(fw * h - fh * w) <= max(fw, w) + max(fh, h):
        return fw, fh
    return size


def _require_shrink_seal(fd: int) -> None:
    import fcntl
    get_seals = getattr(fcntl, "F_GET_SEALS", None)
    if get_seals is None:
        return  # no seals on this platform (macOS shm_open)
    try:
        seals = fcntl.fcntl(fd, get_seals)
    except OSError:
        raise P.ProtocolError(P.E_INVALID, "shared memory must be a sealable memfd (MFD_ALLOW_SEALING)") from None
    if not seals & fcntl.F_SEAL_SHRINK:
        raise P.ProtocolError(P.E_INVALID, "shared memory must be sealed with F_SEAL_SHRINK")


@dataclass
class Session:
    plan: list[int]
    sends: Sequence[int]  # the frames the host sends, in order: the plan, or every frame
    max_side: int
    first: int
    last: int
    shots: ShotAnalyses
    owner: int  # the connection that opened it: its sessions end with it
    received: int = 0
    touched: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.what = "sampled frames" if self.sends is self.plan else "frames"  # what the host sends, for errors


class Handlers:
    """One engine shared by all connections. Engine calls (and the sessions) are serialised by a
    lock; HELLO, PING and SAMPLE_PLAN skip it, so hosts' quick queries never wait behind a frame."""

    def __init__(self, engine: Engine, features_dir: Path) -> None:
        self.engine = engine
        self.features_dir = features_dir
        self.lock = threading.Lock()
        self.sessions: dict[int, Session] = {}
        self.next_session = 1
        self.style_cache: OrderedDict[tuple, StyleSet] = OrderedDict()
        self.feature_cache: OrderedDict[str, GlobalFeatures] = OrderedDict()

    def handle(self, mtype: int, payload: bytes, fd: int | None, owner: int = 0) -> tuple[int, bytes]:
        r = P.Reader(payload)
        quick = {P.HELLO: self.hello, P.SAMPLE_PLAN: self.sample_plan, P.PING: self.ping}
        if mtype in quick:
            return mtype | P.REPLY, quick[mtype](r)
        with self.lock:
            if mtype == P.ANALYZE_BEGIN:
                return mtype | P.REPLY, self.analyze_begin(r, owner)
            if mtype == P.ANALYZE_FRAME:
                return mtype | P.REPLY, self.analyze_frame(r, fd, owner)
            if mtype == P.ANALYZE_END:
                return mtype | P.REPLY, self.analyze_end(r, owner)
            return mtype | P.REPLY, self.stylize(r, fd)

    def release(self, owner: int) -> None:
        """A connection closed: its unfinished analyses are dropped."""
        with self.lock:
            for sid in [s for s, v in self.sessions.items() if v.owner == owner]:
                del self.sessions[sid]

    # ----- messages ----------------------------------------------------------------------
    def hello(self, r: P.Reader) -> bytes:
        r.str()
        r.end()
        e = self.engine
        return P.Writer().str(engine_version()).str(e.model.model_id).str(str(e.device)).pack("<B", int(e.trained)).bytes()

    def ping(self, r: P.Reader) -> bytes:
        r.end()
        return b""

    def sample_plan(self, r: P.Reader) -> bytes:
        first, last, interval = P.read_range(r)
        r.end()
        plan = self._plan(first, last, interval)
        w = P.Writer().pack("<I", len(plan))
        for f in plan:
            w.pack("<i", f)
        return w.bytes()

    def analyze_begin(self, r: P.Reader, owner: int) -> bytes:
        first, last, interval = P.read_range(r)
        max_side = P.read_max_side(r)
        paths, _ = P.read_styles(r, with_weights=False)
        label = r.str()
        flags, base = r.u32(), r.str()
        r.end()
        if flags & ~(P.FULL_STRENGTH | P.DEFLICKER | P.PER_SHOT):
            raise P.ProtocolError(P.E_INVALID, f"unknown analysis flags 0x{flags:x}")
        if base and (flags & ~P.PER_SHOT or not FEATURES_ID.fullmatch(base)):
            raise P.ProtocolError(P.E_INVALID, "a base must be a features id (64 hex digits), without flags other "
                                               "than PER_SHOT")
        plan = self._plan(first, last, interval)
        self._drop_idle_sessions()
        if len(self.sessions) >= MAX_SESSIONS:
            raise P.ProtocolError(P.E_LIMIT, f"{MAX_SESSIONS} analyses are already open")
        styles = self._styles(paths)
        settings = dict(source=label, max_side=max_side or None)
        if base:
            leans = self._features(base)
            if len(leans) > 1 and not flags & P.PER_SHOT:
                raise P.ProtocolError(P.E_INVALID, "the base features were analysed shot by shot: complete them "
                                                   "with PER_SHOT, sending every frame")
            shots = ShotAnalyses(lambda k: self.engine.own_colour_analysis(leans[k], styles), first, last + 1,
                                 interval, cuts=[f.frame_range[0] for f in leans[1:]], **settings)
            if ([i for f in leans for i in f.sampled], leans[0].frame_range[0], leans[-1].frame_range[1],
                    leans[0].settings.get("max_side")) != (list(shots.wanted()), first, last + 1, max_side or None):
                raise P.ProtocolError(P.E_INVALID, "the base features were analysed over other frames or at "
                                                   "another max side: analyze the clip again")
        else:
            own = not flags & P.FULL_STRENGTH
            shots = ShotAnalyses(lambda _: self.engine.analysis(styles, own_colours=own), first, last + 1, interval,
                                 cuts=None if flags & P.PER_SHOT else [], deflicker=bool(flags & P.DEFLICKER),
                                 **settings)
        sid = self.next_session
        self.next_session = self.next_session % 0xFFFFFFFF + 1
        sends = range(first, last + 1) if flags & (P.DEFLICKER | P.PER_SHOT) else plan
        self.sessions[sid] = Session(plan, sends, max_side, first, last, shots, owner)
        return P.Writer().pack("<I", sid).bytes()

    def analyze_frame(self, r: P.Reader, fd: int, owner: int) -> bytes:
        sid, frame_no = r.u32(), r.i32()
        desc = P.ImageDesc.read(r)
        r.end()
        session = self._session(sid, owner)
        if session.received >= len(session.sends):
            raise P.ProtocolError(P.E_INVALID, f"all {session.what} were already sent")
        expected = session.sends[session.received]
        if frame_no != expected:
            raise P.ProtocolError(P.E_INVALID, f"expected {session.what[:-1]} {expected}, got {frame_no}")
        image = SharedImage(fd, desc)
        try:
            rgb = image.rgb()
        finally:
            image.close()
        size = process_size(desc.width, desc.height, session.max_side or None)
        if session.received == 0:  # the clip's size is known now: compile if its length repays the wait
            self.engine.compile_for_render(session.last - session.first + 1, *size, analysed=len(session.plan))
        session.shots.add(frame_no, rgb)
        session.received += 1
        session.touched = time.monotonic()
        return b""

    def analyze_end(self, r: P.Reader, owner: int) -> bytes:
        sid = r.u32()
        r.end()
        session = self._session(sid, owner)
        del self.sessions[sid]
        if session.received != len(session.sends):
            raise P.ProtocolError(P.E_INVALID,
                                  f"only {session.received} of {len(session.sends)} {session.what} were sent")
        shots = session.shots.finish()
        data = shots_to_bytes(shots)
        fid = hashlib.sha256(data).hexdigest()
        path = self.features_dir / f"{fid}.vstf"
        if not path.is_file():
            try:
                self.features_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(path, data)
            except OSError as exc:
                raise VstError(f"cannot store global features in {self.features_dir}: {exc.strerror or exc}") from None
        self._remember(self.feature_cache, fid, shots)
        return P.Writer().str(fid).bytes()

    def stylize(self, r: P.Reader, fd: int) -> bytes:
        desc = P.ImageDesc.read(r)
        strength = r.f32()
        preserve, consistency = r.u8(), r.u8()
        r.u16()
        max_side = P.read_max_side(r)
        frame_no = r.i32()
        fid = r.str()
        paths, weights = P.read_styles(r, with_weights=True)
        r.end()
        if not 0.0 <= strength <= 1.0:
            raise P.ProtocolError(P.E_INVALID, f"strength {strength} outside 0..1")
        if preserve > 1 or consistency > 1:
            raise P.ProtocolError(P.E_INVALID, "preserve_colours and consistency must be 0 or 1")
        if consistency and not FEATURES_ID.fullmatch(fid):
            raise P.ProtocolError(P.E_INVALID, "consistency needs a features id (64 hex digits): analyze the clip")
        if not consistency and fid:
            raise P.ProtocolError(P.E_INVALID, "a features id was given with consistency off")
        styles = self._styles(paths)
        size = process_size(desc.width, desc.height, max_side or None)
        plan = styles
        if consistency:
            plan = self._shot_at(self._features(fid), frame_no)
            if strength < 1 and not plan.has_own_colours:
                raise P.ProtocolError(P.E_OWN_COLOURS, "these global features were analysed for full strength only: "
                                                       "a strength below 1 needs the clip's own colours (analyze "
                                                       "with them as the base)")
            size = _features_size(plan, size)
            plan.check(self.engine.model.model_id, styles.refs, size)
        image = SharedImage(fd, desc)
        try:
            rgb = resize_frame(image.rgb(), size)
            if consistency:
                rgb = apply_correction(rgb, plan.exposure_correction(frame_no))
            out = self.engine.stylize(rgb, plan, weights, strength, bool(preserve), as_float=desc.depth == 4)
            if out.shape[:2] != (desc.height, desc.width):
                out = cv2.resize(out, (desc.width, desc.height), interpolation=cv2.INTER_CUBIC)
                if out.dtype == np.float32:
                    np.clip(out, 0.0, 1.0, out=out)
            image.put_rgb(out)
        finally:
            image.close()
        return b""

    # ----- helpers -----------------------------------------------------------------------
    def _plan(self, first: int, last: int, interval: int) -> list[int]:
        plan = [first + i for i in sample_indices(0, last - first + 1, interval)]
        if len(plan) > P.MAX_PLAN:
            raise P.ProtocolError(P.E_INVALID, f"{len(plan)} sampled frames exceed {P.MAX_PLAN}: use a larger interval")
        return plan

    @staticmethod
    def _shot_at(shots: list[GlobalFeatures], frame_no: int) -> GlobalFeatures:
        """The features that stylize host frame `frame_no`: its shot's. Features with frame-wise contents
        (several shots, deflicker corrections) refuse frames outside their range."""
        for feats in shots:
            start, end = feats.frame_range
            if start <= frame_no < end or (len(shots) == 1 and not feats.deflickered):
                return feats
        start, end = shots[0].frame_range[0], shots[-1].frame_range[1]
        what = "shot by shot" if len(shots) > 1 else "with deflicker corrections"
        raise P.ProtocolError(P.E_INVALID, f"frame {frame_no} is outside the frames {start}..{end - 1} these "
                                           f"features were analysed over ({what})")

    def _session(self, sid: int, owner: int) -> Session:
        session = self.sessions.get(sid)
        if session is None or session.owner != owner:
            raise P.ProtocolError(P.E_NOT_FOUND, f"no open analysis {sid}")
        return session

    def _drop_idle_sessions(self) -> None:
        now = time.monotonic()
        for sid in [s for s, v in self.sessions.items() if now - v.touched > SESSION_IDLE_S]:
            del self.sessions[sid]

    def _styles(self, paths: list[str]) -> StyleSet:
        key = []
        for p in paths:
            try:
                st = os.stat(p)
            except OSError:
                raise P.ProtocolError(P.E_NOT_FOUND, f"style image not found: {p}") from None
            key.append((p, st.st_mtime_ns, st.st_size))
        key = tuple(key)
        if key not in self.style_cache:
            self._remember(self.style_cache, key, self.engine.load_styles(paths))
        self.style_cache.move_to_end(key)
        return self.style_cache[key]

    def _features(self, fid: str) -> list[GlobalFeatures]:
        """The stored features `fid`: one per shot (one for a clip analysed whole)."""
        if fid not in self.feature_cache:
            path = self.features_dir / f"{fid}.vstf"
            if not path.is_file():
                raise P.ProtocolError(P.E_NOT_FOUND, f"global features {fid[:12]}… not found in {self.features_dir}: "
                                                     "analyze the clip (or share that folder with this machine)")
            if hashlib.sha256(path.read_bytes()).hexdigest() != fid:
                raise VstError(f"stored global features {path} are damaged (checksum mismatch): analyze again")
            self._remember(self.feature_cache, fid, load_shots(path))
        self.feature_cache.move_to_end(fid)
        return self.feature_cache[fid]

    @staticmethod
    def _remember(cache: OrderedDict, key, value) -> None:
        cache[key] = value
        while len(cache) > CACHE_ITEMS:
            cache.popitem(last=False)
