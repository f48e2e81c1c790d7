"""A small OpenFX host in Python (ctypes), for testing the Video Style Transfer plugin.

It implements the property, image-effect, parameter and message suites with real property
sets, a Source clip made of numpy frames (any row layout: packed, padded, negative row bytes,
offset bounds), an Output clip, and parameters with linearly interpolated keys. The variadic
suite functions come from host_shim.c (ctypes callbacks cannot be variadic).

The host also checks the plugin's manners: it records every image fetch and release, parameter
values set while rendering (not allowed), property type mismatches and unknown property names.

Run as a script it plays a whole scenario and writes the results to an .npz file: the
sanitizer test runs it in a subprocess with AddressSanitizer preloaded.
"""
from __future__ import annotations

import argparse
import ctypes as C
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

# Status codes
OK, FAILED, ERR_FATAL, ERR_UNKNOWN, ERR_MISSING_HOST_FEATURE, ERR_UNSUPPORTED, ERR_EXISTS, ERR_FORMAT, \
    ERR_MEMORY, ERR_BAD_HANDLE, ERR_BAD_INDEX, ERR_VALUE, REPLY_YES, REPLY_NO, REPLY_DEFAULT = range(15)

FILTER = "OfxImageEffectContextFilter"
GENERAL = "OfxImageEffectContextGeneral"
BYTE, FLOAT = "OfxBitDepthByte", "OfxBitDepthFloat"

# Parameter kinds as host_shim.c reads them
KIND_OTHER, KIND_DOUBLE, KIND_INT, KIND_STRING = range(4)
PARAM_KINDS = {"OfxParamTypeDouble": KIND_DOUBLE, "OfxParamTypeInteger": KIND_INT, "OfxParamTypeBoolean": KIND_INT,
               "OfxParamTypeChoice": KIND_INT, "OfxParamTypeString": KIND_STRING, "OfxParamTypePushButton": KIND_OTHER,
               "OfxParamTypeGroup": KIND_OTHER, "OfxParamTypePage": KIND_OTHER}

# Property names a plugin may set or get (OpenFX 1.4), with their value type.
KNOWN_PROPS = {
    # generic / plugin descriptor
    "OfxPropType": "str", "OfxPropName": "str", "OfxPropLabel": "str", "OfxPropShortLabel": "str",
    "OfxPropLongLabel": "str", "OfxPropPluginDescription": "str", "OfxPropVersion": "int",
    "OfxPropVersionLabel": "str", "OfxPropAPIVersion": "int", "OfxPropTime": "dbl", "OfxPropInstanceData": "ptr",
    "OfxPropChangeReason": "str", "OfxPropIsInteractive": "int",
    "OfxImageEffectPluginPropGrouping": "str", "OfxImageEffectPluginPropSingleInstance": "int",
    "OfxImageEffectPluginRenderThreadSafety": "str", "OfxImageEffectPluginPropHostFrameThreading": "int",
    "OfxImageEffectPropSupportedContexts": "str", "OfxImageEffectPropSupportedPixelDepths": "str",
    "OfxImageEffectPropSupportedComponents": "str", "OfxImageEffectPropSupportsMultiResolution": "int",
    "OfxImageEffectPropSupportsTiles": "int", "OfxImageEffectPropTemporalClipAccess": "int",
    "OfxImageEffectPropSupportsMultipleClipDepths": "int", "OfxImageEffectPropSupportsMultipleClipPARs": "int",
    "OfxImageEffectPluginPropFieldRenderTwiceAlways": "int", "OfxImageEffectPropContext": "str",
    "OfxImageEffectPropFrameRange": "dbl", "OfxImageEffectPropRenderWindow": "int",
    "OfxImageEffectPropRenderScale": "dbl", "OfxImageEffectPropFieldToRender": "str",
    "OfxImageEffectPropSequentialRenderStatus": "int", "OfxImageEffectPropInteractiveRenderStatus": "int",
    "OfxImageEffectPropRenderQualityDraft": "int", "OfxImageEffectPropFrameStep": "dbl",
    "OfxImageEffectPropIsInteractive": "int", "OfxImageEffectPropProjectSize": "dbl",
    "OfxImageEffectPropProjectOffset": "dbl", "OfxImageEffectPropProjectExtent": "dbl",
    "OfxImageEffectPropProjectPixelAspectRatio": "dbl", "OfxImageEffectInstancePropEffectDuration": "dbl",
    "OfxImageEffectInstancePropSequentialRender": "int", "OfxImageEffectPropFrameRate": "dbl",
    "OfxImageEffectPropPixelDepth": "str", "OfxImageEffectPropComponents": "str",
    "OfxImageEffectPropPreMultiplication": "str", "OfxImageEffectHostPropIsBackground": "int",
    # clips
    "OfxImageClipPropOptional": "int", "OfxImageClipPropIsMask": "int", "OfxImageClipPropConnected": "int",
    "OfxImageClipPropFieldExtraction": "str", "OfxImageClipPropContinuousSamples": "int",
    "OfxImageClipPropUnmappedPixelDepth": "str", "OfxImageClipPropUnmappedComponents": "str",
    "OfxImageEffectPropUnmappedFrameRange": "dbl", "OfxImageEffectPropUnmappedFrameRate": "dbl",
    "OfxImageClipPropFieldOrder": "str", "OfxImagePropPixelAspectRatio": "dbl",
    # images
    "OfxImagePropData": "ptr", "OfxImagePropBounds": "int", "OfxImagePropRegionOfDefinition": "int",
    "OfxImagePropRowBytes": "int", "OfxImagePropField": "str", "OfxImagePropUniqueIdentifier": "str",
    # params
    "OfxParamPropType": "str", "OfxParamPropScriptName": "str", "OfxParamPropHint": "str",
    "OfxParamPropDefault": "any", "OfxParamPropMin": "any", "OfxParamPropMax": "any",
    "OfxParamPropDisplayMin": "any", "OfxParamPropDisplayMax": "any", "OfxParamPropIncrement": "dbl",
    "OfxParamPropDigits": "int", "OfxParamPropAnimates": "int", "OfxParamPropIsAnimating": "int",
    "OfxParamPropIsAutoKeying": "int", "OfxParamPropPersistant": "int", "OfxParamPropEvaluateOnChange": "int",
    "OfxParamPropPluginMayWrite": "int", "OfxParamPropCacheInvalidation": "str", "OfxParamPropCanUndo": "int",
    "OfxParamPropSecret": "int", "OfxParamPropEnabled": "int", "OfxParamPropParent": "str",
    "OfxParamPropStringMode": "str", "OfxParamPropStringFilePathExists": "int", "OfxParamPropDoubleType": "str",
    "OfxParamPropDataPtr": "ptr",
}
FRAME_RANGE_PREFIX = "OfxImageClipPropFrameRange_"
SHIM_SOURCE = Path(__file__).with_name("host_shim.c")


def compile_shim(out_dir: Path) -> Path:
    out = Path(out_dir) / "libofxhostshim.so"
    subprocess.run(["gcc", "-std=c11", "-O1", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror", str(SHIM_SOURCE),
                    "-o", str(out)], check=True, capture_output=True, text=True)
    return out


# ---- property sets ---------------------------------------------------------------------

_DEFAULTS = {"str": b"", "int": 0, "dbl": 0.0, "ptr": None}


class Props:
    """A property set: name -> (type, values). `plugin_set` names what the plugin wrote."""

    def __init__(self, host: "OfxHost", kind: str, values: dict | None = None) -> None:
        self.host, self.kind = host, kind
        self.values: dict[str, tuple[str, list]] = {}
        self.plugin_set: set[str] = set()
        self._keep: list = []  # C strings handed to the plugin stay alive with the set
        self.handle = host.registry.add(self)
        for name, (t, vals) in (values or {}).items():
            self.put(name, t, vals)

    def put(self, name: str, t: str, vals) -> None:
        vals = list(vals) if isinstance(vals, (list, tuple)) else [vals]
        self.values[name] = (t, [v.encode() if isinstance(v, str) else v for v in vals])

    def get(self, name: str, index: int = 0):
        t, vals = self.values[name]
        v = vals[index]
        return v.decode() if isinstance(v, bytes) else v

    def all(self, name: str) -> list:
        return [v.decode() if isinstance(v, bytes) else v for v in self.values[name][1]]

    def type_of(self, name: str) -> str | None:
        return self.values[name][0] if name in self.values else None

    # called from the suite callbacks
    def _set(self, name: str, t: str, index: int, value, count: int | None = None) -> int:
        known = KNOWN_PROPS.get(name)
        if known is None and not name.startswith(FRAME_RANGE_PREFIX):
            self.host.problem(f"plugin set unknown property {name} on {self.kind}")
        elif known not in (None, "any", t):
            self.host.problem(f"plugin set {name} as {t}, the specification says {known}")
        if name in self.values and self.values[name][0] != t:
            self.host.problem(f"plugin set {name} as {t} on {self.kind}, it is {self.values[name][0]}")
        old = self.values.get(name, (t, []))[1]
        if count is not None:
            vals = list(value)
        else:
            if index < 0:
                return ERR_BAD_INDEX
            vals = list(old) + [_DEFAULTS[t]] * max(0, index + 1 - len(old))
            vals[index] = value
        self.values[name] = (t, vals)
        self.plugin_set.add(name)
        return OK

    def _get(self, name: str, t: str, index: int):
        if name not in self.values:
            if name not in KNOWN_PROPS and not name.startswith(FRAME_RANGE_PREFIX):
                self.host.problem(f"plugin asked for unknown property {name} on {self.kind}")
            return ERR_UNKNOWN, None
        have, vals = self.values[name]
        if have != t:
            self.host.problem(f"plugin read {name} as {t} on {self.kind}, it is {have}")
            return ERR_VALUE, None
        if not 0 <= index < len(vals):
            return ERR_BAD_INDEX, None
        return OK, vals[index]

    def c_string(self, value: bytes) -> int:
        buf = C.create_string_buffer(value)
        self._keep.append(buf)
        return C.addressof(buf)


class Registry:
    """Opaque handles for the plugin: small integers mapped to Python objects."""

    def __init__(self) -> None:
        self.objects: dict[int, object] = {}
        self.next = 0x10000

    def add(self, obj) -> int:
        h, self.next = self.next, self.next + 0x40
        self.objects[h] = obj
        return h

    def get(self, handle, cls=None):
        obj = self.objects.get(handle or 0)
        if obj is None or (cls is not None and not isinstance(obj, cls)):
            return None
        return obj


# ---- parameters, clips, images ---------------------------------------------------------

class Param:
    def __init__(self, host: "OfxHost", ptype: str, name: str, props: Props) -> None:
        self.host, self.type, self.name, self.props = host, ptype, name, props
        self.kind = PARAM_KINDS.get(ptype, KIND_OTHER)
        self.value = None
        self.keys: dict[float, float] = {}
        self.handle = host.registry.add(self)
        self._keep: list = []

    def default(self):
        if self.kind == KIND_OTHER:
            return None
        if "OfxParamPropDefault" not in self.props.values:
            return {KIND_DOUBLE: 0.0, KIND_INT: 0, KIND_STRING: ""}[self.kind]
        return self.props.get("OfxParamPropDefault")

    def at(self, t: float | None):
        if not self.keys or t is None:
            return self.value
        times = sorted(self.keys)
        if t <= times[0]:
            return self.keys[times[0]]
        if t >= times[-1]:
            return self.keys[times[-1]]
        for a, b in zip(times, times[1:]):
            if a <= t <= b:
                u = (t - a) / (b - a)
                return self.keys[a] * (1 - u) + self.keys[b] * u
        raise AssertionError


class Image:
    """An RGBA image in OFX layout: rows upwards from bounds.y1, any row stride (even negative)."""

    def __init__(self, host: "OfxHost", pixels: np.ndarray, x0: int, y0: int, layout: str, fill: int = 0,
                 premult: str = "OfxImageOpaque") -> None:
        h, w = pixels.shape[:2]
        self.shape, self.dtype, self.layout = (h, w), pixels.dtype, layout
        self.row = w * 4 * pixels.itemsize
        stride = self.row + (40 if layout == "padded" else 0)  # padding that breaks 16-byte alignment
        self.buf = np.full((h, stride), fill, np.uint8)
        rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(h, self.row)
        base = self.buf.ctypes.data
        if layout == "negative":  # memory holds the top row first; data points at the bottom row
            self.buf[:, :self.row] = rows
            data, row_bytes = base + (h - 1) * stride, -stride
        else:
            self.buf[:, :self.row] = rows[::-1]
            data, row_bytes = base, stride
        depth = BYTE if pixels.dtype == np.uint8 else FLOAT
        bounds = [x0, y0, x0 + w, y0 + h]
        self.props = Props(host, "image", {
            "OfxPropType": ("str", "OfxTypeImage"), "OfxImagePropData": ("ptr", data),
            "OfxImagePropBounds": ("int", bounds), "OfxImagePropRegionOfDefinition": ("int", bounds),
            "OfxImagePropRowBytes": ("int", row_bytes), "OfxImageEffectPropPixelDepth": ("str", depth),
            "OfxImageEffectPropComponents": ("str", "OfxImageComponentRGBA"),
            "OfxImageEffectPropPreMultiplication": ("str", premult),
            "OfxImagePropPixelAspectRatio": ("dbl", 1.0), "OfxImageEffectPropRenderScale": ("dbl", [1.0, 1.0]),
            "OfxImagePropField": ("str", "OfxImageFieldNone"), "OfxImagePropUniqueIdentifier": ("str", f"img{id(self)}"),
        })

    def pixels(self) -> np.ndarray:
        """The image as H x W x 4, top row first."""
        rows = self.buf[:, :self.row]
        if self.layout != "negative":
            rows = rows[::-1]
        return np.ascontiguousarray(rows).view(self.dtype).reshape(*self.shape, 4)


class Clip:
    def __init__(self, host: "OfxHost", name: str, props: Props) -> None:
        self.host, self.name, self.props = host, name, props
        self.handle = host.registry.add(self)
        self.frames: dict[int, np.ndarray] = {}
        self.layout, self.origin = "packed", (0, 0)
        self.fetches: list[tuple[float, str]] = []  # (time, action)
        self.outstanding: dict[int, Image] = {}
        self.rendered: dict[float, Image] = {}
        self.output_of: Clip | None = None  # the Output clip mirrors the Source's format
        self.premult = "OfxImageOpaque"  # or "OfxImageAlphaPremultiplied", "OfxImageAlphaUnPremultiplied"

    def image_at(self, t: float) -> Image | None:
        if self.output_of is not None:
            src = self.output_of
            frame = src.frames.get(int(round(t)))
            if frame is None:
                return None
            fill = 0x5A  # untouched output pixels stay recognisable
            img = Image(self.host, np.zeros_like(frame), *src.origin, self.layout, fill=fill, premult=src.premult)
            img.buf[...] = fill
            self.rendered[t] = img
            return img
        if t != int(t) or int(t) not in self.frames:
            return None
        return Image(self.host, self.frames[int(t)], *self.origin, self.layout, premult=self.premult)


class Effect:
    """An effect descriptor or instance: its properties, parameter set and clips."""

    def __init__(self, host: "OfxHost", kind: str, props: dict) -> None:
        self.host, self.kind = host, kind
        self.props = Props(host, kind, props)
        self.handle = host.registry.add(self)
        self.param_set = ParamSet(host)
        self.clips: dict[str, Clip] = {}


class ParamSet:
    def __init__(self, host: "OfxHost") -> None:
        self.host = host
        self.props = Props(host, "param set", {})
        self.params: dict[str, Param] = {}
        self.handle = host.registry.add(self)


# ---- C structures ------------------------------------------------------------------------

def _suite(names: list[str]):
    return type("Suite", (C.Structure,), {"_fields_": [(n, C.c_void_p) for n in names]})


PropertySuite = _suite(["propSetPointer", "propSetString", "propSetDouble", "propSetInt", "propSetPointerN",
                        "propSetStringN", "propSetDoubleN", "propSetIntN", "propGetPointer", "propGetString",
                        "propGetDouble", "propGetInt", "propGetPointerN", "propGetStringN", "propGetDoubleN",
                        "propGetIntN", "propReset", "propGetDimension"])
ImageEffectSuite = _suite(["getPropertySet", "getParamSet", "clipDefine", "clipGetHandle", "clipGetPropertySet",
                           "clipGetImage", "clipReleaseImage", "clipGetRegionOfDefinition", "abort",
                           "imageMemoryAlloc", "imageMemoryFree", "imageMemoryLock", "imageMemoryUnlock"])
ParameterSuite = _suite(["paramDefine", "paramGetHandle", "paramSetGetPropertySet", "paramGetPropertySet",
                         "paramGetValue", "paramGetValueAtTime", "paramGetDerivative", "paramGetIntegral",
                         "paramSetValue", "paramSetValueAtTime", "paramGetNumKeys", "paramGetKeyTime",
                         "paramGetKeyIndex", "paramDeleteKey", "paramDeleteAllKeys", "paramCopy", "paramEditBegin",
                         "paramEditEnd"])
MessageSuite = _suite(["message"])


class OfxHostStruct(C.Structure):
    _fields_ = [("host", C.c_void_p), ("fetchSuite", C.c_void_p)]


class OfxPlugin(C.Structure):
    _fields_ = [("pluginApi", C.c_char_p), ("apiVersion", C.c_int), ("pluginIdentifier", C.c_char_p),
                ("pluginVersionMajor", C.c_uint), ("pluginVersionMinor", C.c_uint), ("setHost", C.c_void_p),
                ("mainEntry", C.c_void_p)]


class OfxRectD(C.Structure):
    _fields_ = [("x1", C.c_double), ("y1", C.c_double), ("x2", C.c_double), ("y2", C.c_double)]


assert C.sizeof(OfxPlugin) == 48 and C.sizeof(OfxHostStruct) == 16
assert len(PropertySuite._fields_) == 18 and len(ImageEffectSuite._fields_) == 13
assert len(ParameterSuite._fields_) == 18

H, S, I, D, V = C.c_void_p, C.c_char_p, C.c_int, C.c_double, C.c_void_p
ST = C.c_int
MAIN_ENTRY = C.CFUNCTYPE(ST, C.c_char_p, H, H, H)
SET_HOST = C.CFUNCTYPE(None, C.POINTER(OfxHostStruct))
FETCH_SUITE = C.CFUNCTYPE(C.c_void_p, H, S, I)


# ---- the host ----------------------------------------------------------------------------

class OfxHost:
    def __init__(self, binary: str | Path, shim: str | Path) -> None:
        self.registry = Registry()
        self.problems: list[str] = []
        self.messages: list[tuple[str, str, str]] = []  # (type, text, action)
        self.param_sets: list[tuple[str, str, object]] = []  # (action, param, value)
        self.suites_asked: list[tuple[str, int]] = []
        self.abort_render = False
        self._local = threading.local()
        self._lock = threading.Lock()
        self._cb: list = []  # ctypes callbacks must outlive the plugin's use of them
        self.shim = C.CDLL(str(shim))
        self.lib = C.CDLL(str(binary), mode=os.RTLD_LOCAL | os.RTLD_NOW)
        self.host_props = Props(self, "host", {
            "OfxPropName": ("str", "org.videostyletransfer.testhost"), "OfxPropLabel": ("str", "Python test host"),
            "OfxPropAPIVersion": ("int", [1, 4]), "OfxImageEffectHostPropIsBackground": ("int", 1),
            "OfxImageEffectPropSupportsMultiResolution": ("int", 1), "OfxImageEffectPropSupportsTiles": ("int", 1),
            "OfxImageEffectPropTemporalClipAccess": ("int", 1),
            "OfxImageEffectPropSupportedComponents": ("str", ["OfxImageComponentRGBA"]),
            "OfxImageEffectPropSupportedContexts": ("str", [FILTER, GENERAL]),
            "OfxImageEffectPropSupportedPixelDepths": ("str", [BYTE, FLOAT]),
            "OfxImageEffectPropSupportsMultipleClipDepths": ("int", 0),
            "OfxImageEffectPluginRenderThreadSafety": ("str", "OfxImageEffectRenderFullySafe"),
        })
        self._build_suites()
        self.host_struct = OfxHostStruct(self.host_props.handle, self._fn(FETCH_SUITE, self._fetch_suite))
        get_n = self.lib.OfxGetNumberOfPlugins
        get_n.restype = C.c_int
        get_p = self.lib.OfxGetPlugin
        get_p.restype, get_p.argtypes = C.POINTER(OfxPlugin), [C.c_int]
        if get_n() != 1:
            raise RuntimeError("expected exactly one plugin")
        self.plugin = get_p(0).contents
        self.main = MAIN_ENTRY(self.plugin.mainEntry)
        self.descriptor: Effect | None = None
        self.context_descriptors: dict[str, Effect] = {}

    # -- bookkeeping
    def problem(self, text: str) -> None:
        with self._lock:
            if text not in self.problems:
                self.problems.append(text)

    @property
    def action(self) -> str:
        return getattr(self._local, "action", "")

    def _fn(self, proto, fn) -> int:
        cfn = proto(fn)
        self._cb.append(cfn)
        return C.cast(cfn, C.c_void_p).value

    def call(self, action: str, handle: int | None, in_args: Props | None = None, out_args: Props | None = None) -> int:
        outer = self.action
        self._local.action = action
        try:
            return self.main(action.encode(), handle, in_args.handle if in_args else None,
                             out_args.handle if out_args else None)
        finally:
            self._local.action = outer

    # -- suites
    def _fetch_suite(self, _host, name, version):
        name = name.decode()
        self.suites_asked.append((name, version))
        suite = {("OfxPropertySuite", 1): self.prop_suite, ("OfxImageEffectSuite", 1): self.effect_suite,
                 ("OfxParameterSuite", 1): self.param_suite, ("OfxMessageSuite", 1): self.message_suite}.get(
                     (name, version))
        return C.addressof(suite) if suite is not None else None

    def _build_suites(self) -> None:
        r = self.registry

        def props(h) -> Props | None:
            p = r.get(h, Props)
            if p is None:
                self.problem(f"bad property set handle {h}")
            return p

        def setter(t, conv=lambda v: v):
            def fn(h, name, index, value):
                p = props(h)
                return ERR_BAD_HANDLE if p is None else p._set(name.decode(), t, index, conv(value))
            return fn

        def setter_n(t, conv):
            def fn(h, name, count, values):
                p = props(h)
                if p is None:
                    return ERR_BAD_HANDLE
                return p._set(name.decode(), t, 0, [conv(values[i]) for i in range(count)], count=count)
            return fn

        def getter(t, store):
            def fn(h, name, index, out):
                p = props(h)
                if p is None:
                    return ERR_BAD_HANDLE
                st, v = p._get(name.decode(), t, index)
                if st == OK:
                    out[0] = store(p, v)
                return st
            return fn

        def getter_n(t, store):
            def fn(h, name, count, out):
                p = props(h)
                if p is None:
                    return ERR_BAD_HANDLE
                for i in range(count):
                    st, v = p._get(name.decode(), t, i)
                    if st != OK:
                        return st
                    out[i] = store(p, v)
                return OK
            return fn

        def reset(h, name):
            p = props(h)
            return ERR_BAD_HANDLE if p is None else OK

        def dimension(h, name, out):
            p = props(h)
            if p is None:
                return ERR_BAD_HANDLE
            name = name.decode()
            if name not in p.values:
                return ERR_UNKNOWN
            out[0] = len(p.values[name][1])
            return OK

        pv = lambda p, v: v  # noqa: E731
        ps = lambda p, v: p.c_string(v)  # noqa: E731
        sd = C.CFUNCTYPE
        self.prop_suite = PropertySuite(
            self._fn(sd(ST, H, S, I, V), setter("ptr")),
            self._fn(sd(ST, H, S, I, S), setter("str")),
            self._fn(sd(ST, H, S, I, D), setter("dbl")),
            self._fn(sd(ST, H, S, I, I), setter("int")),
            self._fn(sd(ST, H, S, I, C.POINTER(V)), setter_n("ptr", lambda v: v)),
            self._fn(sd(ST, H, S, I, C.POINTER(S)), setter_n("str", lambda v: v)),
            self._fn(sd(ST, H, S, I, C.POINTER(D)), setter_n("dbl", float)),
            self._fn(sd(ST, H, S, I, C.POINTER(I)), setter_n("int", int)),
            self._fn(sd(ST, H, S, I, C.POINTER(V)), getter("ptr", pv)),
            self._fn(sd(ST, H, S, I, C.POINTER(V)), getter("str", ps)),
            self._fn(sd(ST, H, S, I, C.POINTER(D)), getter("dbl", pv)),
            self._fn(sd(ST, H, S, I, C.POINTER(I)), getter("int", pv)),
            self._fn(sd(ST, H, S, I, C.POINTER(V)), getter_n("ptr", pv)),
            self._fn(sd(ST, H, S, I, C.POINTER(V)), getter_n("str", ps)),
            self._fn(sd(ST, H, S, I, C.POINTER(D)), getter_n("dbl", pv)),
            self._fn(sd(ST, H, S, I, C.POINTER(I)), getter_n("int", pv)),
            self._fn(sd(ST, H, S), reset),
            self._fn(sd(ST, H, S, C.POINTER(I)), dimension),
        )

        # image effect suite
        def get_property_set(h, out):
            e = r.get(h, Effect)
            if e is None:
                return ERR_BAD_HANDLE
            out[0] = e.props.handle
            return OK

        def get_param_set(h, out):
            e = r.get(h, Effect)
            if e is None:
                return ERR_BAD_HANDLE
            out[0] = e.param_set.handle
            return OK

        def clip_define(h, name, out):
            e = r.get(h, Effect)
            if e is None:
                return ERR_BAD_HANDLE
            name = name.decode()
            clip = Clip(self, name, Props(self, f"clip descriptor {name}", {
                "OfxPropType": ("str", "OfxTypeClip"), "OfxPropName": ("str", name),
                "OfxImageEffectPropSupportedComponents": ("str", []),
                "OfxImageEffectPropTemporalClipAccess": ("int", 0), "OfxImageClipPropOptional": ("int", 0),
                "OfxImageEffectPropSupportsTiles": ("int", 1), "OfxImageClipPropIsMask": ("int", 0)}))
            e.clips[name] = clip
            out[0] = clip.props.handle
            return OK

        def clip_get_handle(h, name, out_clip, out_props):
            e = r.get(h, Effect)
            if e is None:
                return ERR_BAD_HANDLE
            clip = e.clips.get(name.decode())
            if clip is None:
                return ERR_UNKNOWN
            out_clip[0] = clip.handle
            if out_props:
                out_props[0] = clip.props.handle
            return OK

        def clip_get_property_set(h, out):
            clip = r.get(h, Clip)
            if clip is None:
                return ERR_BAD_HANDLE
            out[0] = clip.props.handle
            return OK

        def clip_get_image(h, t, region, out):
            clip = r.get(h, Clip)
            if clip is None:
                return ERR_BAD_HANDLE
            with self._lock:
                clip.fetches.append((t, self.action))
            img = clip.image_at(t)
            if img is None:
                return FAILED
            with self._lock:
                clip.outstanding[img.props.handle] = img
            out[0] = img.props.handle
            return OK

        def clip_release_image(h):
            with self._lock:
                for clip in self._all_clips():
                    if h in clip.outstanding:
                        del clip.outstanding[h]
                        return OK
            self.problem(f"clipReleaseImage of an unknown image {h}")
            return ERR_BAD_HANDLE

        def clip_rod(h, t, out):
            clip = r.get(h, Clip)
            src = clip.output_of or clip if clip else None
            if src is None or not src.frames:
                return FAILED
            f = next(iter(src.frames.values()))
            x0, y0 = src.origin
            out[0] = OfxRectD(x0, y0, x0 + f.shape[1], y0 + f.shape[0])
            return OK

        def abort(h):
            return 1 if self.abort_render else 0

        def unsupported(*_):
            return ERR_UNSUPPORTED

        self.effect_suite = ImageEffectSuite(
            self._fn(sd(ST, H, C.POINTER(H)), get_property_set),
            self._fn(sd(ST, H, C.POINTER(H)), get_param_set),
            self._fn(sd(ST, H, S, C.POINTER(H)), clip_define),
            self._fn(sd(ST, H, S, C.POINTER(H), C.POINTER(H)), clip_get_handle),
            self._fn(sd(ST, H, C.POINTER(H)), clip_get_property_set),
            self._fn(sd(ST, H, D, C.POINTER(OfxRectD), C.POINTER(H)), clip_get_image),
            self._fn(sd(ST, H), clip_release_image),
            self._fn(sd(ST, H, D, C.POINTER(OfxRectD)), clip_rod),
            self._fn(sd(I, H), abort),
            self._fn(sd(ST, H, C.c_size_t, C.POINTER(H)), unsupported),
            self._fn(sd(ST, H), unsupported),
            self._fn(sd(ST, H, C.POINTER(V)), unsupported),
            self._fn(sd(ST, H), unsupported),
        )

        # parameter suite
        def param_define(h, ptype, name, out):
            pset = r.get(h, ParamSet)
            if pset is None:
                return ERR_BAD_HANDLE
            ptype, name = ptype.decode(), name.decode()
            if name in pset.params:
                return ERR_EXISTS
            if ptype not in PARAM_KINDS:
                return ERR_UNKNOWN
            p = Param(self, ptype, name, Props(self, f"param {name}", {
                "OfxParamPropType": ("str", ptype), "OfxPropName": ("str", name), "OfxPropLabel": ("str", name),
                "OfxParamPropSecret": ("int", 0), "OfxParamPropEnabled": ("int", 1),
                "OfxParamPropAnimates": ("int", 1 if ptype not in ("OfxParamTypeString", "OfxParamTypePushButton",
                                                                  "OfxParamTypeGroup") else 0)}))
            pset.params[name] = p
            if out:
                out[0] = p.props.handle
            return OK

        def param_get_handle(h, name, out, out_props):
            pset = r.get(h, ParamSet)
            if pset is None:
                return ERR_BAD_HANDLE
            p = pset.params.get(name.decode())
            if p is None:
                return ERR_UNKNOWN
            out[0] = p.handle
            if out_props:
                out_props[0] = p.props.handle
            return OK

        def paramset_props(h, out):
            pset = r.get(h, ParamSet)
            if pset is None:
                return ERR_BAD_HANDLE
            out[0] = pset.props.handle
            return OK

        def param_props(h, out):
            p = r.get(h, Param)
            if p is None:
                return ERR_BAD_HANDLE
            out[0] = p.props.handle
            return OK

        def num_keys(h, out):
            p = r.get(h, Param)
            if p is None:
                return ERR_BAD_HANDLE
            out[0] = len(p.keys)
            return OK

        def key_time(h, n, out):
            p = r.get(h, Param)
            if p is None:
                return ERR_BAD_HANDLE
            times = sorted(p.keys)
            if n >= len(times):
                return ERR_BAD_INDEX
            out[0] = times[n]
            return OK

        def ok(*_):
            return OK

        self.param_suite = ParameterSuite(
            self._fn(sd(ST, H, S, S, C.POINTER(H)), param_define),
            self._fn(sd(ST, H, S, C.POINTER(H), C.POINTER(H)), param_get_handle),
            self._fn(sd(ST, H, C.POINTER(H)), paramset_props),
            self._fn(sd(ST, H, C.POINTER(H)), param_props),
            C.cast(self.shim.shim_paramGetValue, C.c_void_p).value,
            C.cast(self.shim.shim_paramGetValueAtTime, C.c_void_p).value,
            C.cast(self.shim.shim_paramGetDerivative, C.c_void_p).value,
            C.cast(self.shim.shim_paramGetIntegral, C.c_void_p).value,
            C.cast(self.shim.shim_paramSetValue, C.c_void_p).value,
            C.cast(self.shim.shim_paramSetValueAtTime, C.c_void_p).value,
            self._fn(sd(ST, H, C.POINTER(C.c_uint)), num_keys),
            self._fn(sd(ST, H, C.c_uint, C.POINTER(D)), key_time),
            self._fn(sd(ST, H, D, I, C.POINTER(I)), lambda *a: ERR_UNSUPPORTED),
            self._fn(sd(ST, H, D), lambda *a: ERR_UNSUPPORTED),
            self._fn(sd(ST, H), lambda *a: ERR_UNSUPPORTED),
            self._fn(sd(ST, H, H, D, V), lambda *a: ERR_UNSUPPORTED),
            self._fn(sd(ST, H, S), ok),
            self._fn(sd(ST, H), ok),
        )

        # variadic value access, through the shim
        def param(h) -> Param | None:
            p = r.get(h, Param)
            if p is None:
                self.problem(f"bad parameter handle {h}")
            return p

        def kind(h):
            p = param(h)
            return p.kind if p else KIND_OTHER

        def get_value(h, at_time, t, out):
            p = param(h)
            if p is None:
                return ERR_BAD_HANDLE
            v = p.at(t if at_time else None)
            if p.kind == KIND_STRING:
                buf = C.create_string_buffer((v or "").encode())
                p._keep.append(buf)
                out[0] = C.addressof(buf)
            else:
                out[0] = v
            return OK

        def set_value(h, at_time, t, value):
            p = param(h)
            if p is None:
                return ERR_BAD_HANDLE
            if isinstance(value, bytes):
                value = value.decode()
            action = self.action
            with self._lock:
                self.param_sets.append((action, p.name, value))
            if action not in ("OfxActionInstanceChanged", "OfxActionBeginInstanceChanged",
                              "OfxActionEndInstanceChanged", "OfxActionCreateInstance"):
                self.problem(f"plugin set parameter {p.name} during {action}")
            if at_time:
                p.keys[t] = value
            else:
                p.value = value
            return OK

        def message(h, mtype, mid, text):
            with self._lock:
                self.messages.append(((mtype or b"").decode(), (text or b"").decode(), self.action))
            return OK

        self._variadic = [
            sd(I, H)(kind),
            sd(ST, H, I, D, C.POINTER(D))(get_value),
            sd(ST, H, I, D, C.POINTER(I))(get_value),
            sd(ST, H, I, D, C.POINTER(V))(get_value),
            sd(ST, H, I, D, D)(set_value),
            sd(ST, H, I, D, I)(set_value),
            sd(ST, H, I, D, S)(set_value),
            sd(ST, H, S, S, S)(message),
        ]
        self.shim.shim_register(*self._variadic)
        self.message_suite = MessageSuite(C.cast(self.shim.shim_message, C.c_void_p).value)

    def _all_clips(self):
        for obj in list(self.registry.objects.values()):
            if isinstance(obj, Clip):
                yield obj

    # -- actions
    def load(self) -> int:
        set_host = getattr(self.lib, "OfxSetHost", None) if hasattr(self.lib, "OfxSetHost") else None
        if set_host is not None:
            set_host.restype, set_host.argtypes = C.c_int, [C.POINTER(OfxHostStruct)]
            set_host(C.byref(self.host_struct))
        SET_HOST(self.plugin.setHost)(C.byref(self.host_struct))
        return self.call("OfxActionLoad", None)

    def describe(self) -> Effect:
        self.descriptor = Effect(self, "plugin descriptor", {"OfxPropType": ("str", "OfxTypeImageEffect")})
        st = self.call("OfxActionDescribe", self.descriptor.handle)
        if st != OK:
            raise RuntimeError(f"Describe returned {st}")
        return self.descriptor

    def describe_in_context(self, context: str = FILTER) -> Effect:
        desc = Effect(self, f"descriptor {context}", {"OfxPropType": ("str", "OfxTypeImageEffect")})
        for name, (t, vals) in self.descriptor.props.values.items():
            desc.props.put(name, t, vals)
        in_args = Props(self, "DescribeInContext inArgs", {"OfxImageEffectPropContext": ("str", context)})
        st = self.call("OfxImageEffectActionDescribeInContext", desc.handle, in_args)
        if st != OK:
            raise RuntimeError(f"DescribeInContext returned {st}")
        self.context_descriptors[context] = desc
        return desc

    def create_instance(self, frames: dict[int, np.ndarray], context: str = FILTER, layout: str = "packed",
                        out_layout: str | None = None, origin: tuple[int, int] = (0, 0)) -> "Instance":
        return Instance(self, self.context_descriptors[context], context, frames, layout, out_layout or layout, origin)

    def unload(self) -> int:
        return self.call("OfxActionUnload", None)


class Instance:
    """An effect instance in a Filter/General context with a Source clip of numpy frames."""

    def __init__(self, host: OfxHost, desc: Effect, context: str, frames: dict[int, np.ndarray], layout: str,
                 out_layout: str, origin: tuple[int, int]) -> None:
        self.host = host
        first, last = min(frames), max(frames)
        f0 = frames[first]
        depth = BYTE if f0.dtype == np.uint8 else FLOAT
        self.effect = Effect(host, "instance", {
            "OfxPropType": ("str", "OfxTypeImageEffectInstance"), "OfxImageEffectPropContext": ("str", context),
            "OfxPropInstanceData": ("ptr", None), "OfxPropIsInteractive": ("int", 0),
            "OfxImageEffectPropProjectSize": ("dbl", [f0.shape[1], f0.shape[0]]),
            "OfxImageEffectPropProjectOffset": ("dbl", [0.0, 0.0]),
            "OfxImageEffectPropProjectExtent": ("dbl", [f0.shape[1], f0.shape[0]]),
            "OfxImageEffectPropProjectPixelAspectRatio": ("dbl", 1.0),
            "OfxImageEffectInstancePropEffectDuration": ("dbl", float(last - first + 1)),
            "OfxImageEffectInstancePropSequentialRender": ("int", 0), "OfxImageEffectPropFrameRate": ("dbl", 25.0),
        })
        for name, p in desc.param_set.params.items():
            inst = Param(host, p.type, name, Props(host, f"param instance {name}", p.props.values))
            inst.value = p.default()
            self.effect.param_set.params[name] = inst
        for name in desc.clips:
            props = Props(host, f"clip {name}", desc.clips[name].props.values)
            for k, (t, v) in {"OfxImageClipPropConnected": ("int", 1), "OfxImageEffectPropPixelDepth": ("str", depth),
                              "OfxImageEffectPropComponents": ("str", "OfxImageComponentRGBA"),
                              "OfxImageEffectPropPreMultiplication": ("str", "OfxImageOpaque"),
                              "OfxImagePropPixelAspectRatio": ("dbl", 1.0), "OfxImageEffectPropFrameRate": ("dbl", 25.0),
                              "OfxImageEffectPropFrameRange": ("dbl", [float(first), float(last)]),
                              "OfxImageEffectPropUnmappedFrameRange": ("dbl", [float(first), float(last)]),
                              "OfxImageClipPropFieldOrder": ("str", "OfxImageFieldNone")}.items():
                props.put(k, t, v)
            self.effect.clips[name] = Clip(host, name, props)
        self.source = self.effect.clips["Source"]
        self.output = self.effect.clips["Output"]
        self.source.frames = dict(frames)
        self.source.layout, self.source.origin = layout, origin
        self.output.layout, self.output.output_of = out_layout, self.source
        st = host.call("OfxActionCreateInstance", self.effect.handle)
        if st != OK:
            raise RuntimeError(f"CreateInstance returned {st}")
        self.first, self.last = first, last

    @property
    def params(self) -> dict[str, Param]:
        return self.effect.param_set.params

    def set_value(self, name: str, value) -> None:
        p = self.params[name]
        p.keys.clear()
        p.value = value

    def set_keys(self, name: str, keys: dict[float, float]) -> None:
        self.params[name].keys = dict(keys)

    def user_edit(self, name: str, value=None, t: float = 0.0) -> int:
        """The user changes (or, for a button, presses) a parameter: InstanceChanged as a host sends it."""
        if value is not None:
            self.set_value(name, value)
        args = Props(self.host, "InstanceChanged inArgs", {
            "OfxPropType": ("str", "OfxTypeParameter"), "OfxPropName": ("str", name),
            "OfxPropChangeReason": ("str", "OfxChangeUserEdited"), "OfxPropTime": ("dbl", float(t)),
            "OfxImageEffectPropRenderScale": ("dbl", [1.0, 1.0])})
        reason = Props(self.host, "BeginInstanceChanged inArgs", {"OfxPropChangeReason": ("str", "OfxChangeUserEdited")})
        self.host.call("OfxActionBeginInstanceChanged", self.effect.handle, reason)
        st = self.host.call("OfxActionInstanceChanged", self.effect.handle, args)
        self.host.call("OfxActionEndInstanceChanged", self.effect.handle, reason)
        return st

    def frames_needed(self, t: float) -> tuple[int, list[tuple[float, float]]]:
        prop = FRAME_RANGE_PREFIX + "Source"
        in_args = Props(self.host, "GetFramesNeeded inArgs", {"OfxPropTime": ("dbl", float(t))})
        out_args = Props(self.host, "GetFramesNeeded outArgs", {prop: ("dbl", [float(t), float(t)])})
        st = self.host.call("OfxImageEffectActionGetFramesNeeded", self.effect.handle, in_args, out_args)
        vals = out_args.all(prop)
        return st, list(zip(vals[0::2], vals[1::2]))

    def _seq_args(self, first: float, last: float) -> Props:
        return Props(self.host, "sequence inArgs", {
            "OfxImageEffectPropFrameRange": ("dbl", [float(first), float(last)]),
            "OfxImageEffectPropFrameStep": ("dbl", 1.0), "OfxPropIsInteractive": ("int", 0),
            "OfxImageEffectPropRenderScale": ("dbl", [1.0, 1.0]),
            "OfxImageEffectPropSequentialRenderStatus": ("int", 0),
            "OfxImageEffectPropInteractiveRenderStatus": ("int", 0)})

    def begin_sequence(self, first: float, last: float) -> int:
        return self.host.call("OfxImageEffectActionBeginSequenceRender", self.effect.handle, self._seq_args(first, last))

    def end_sequence(self, first: float, last: float) -> int:
        return self.host.call("OfxImageEffectActionEndSequenceRender", self.effect.handle, self._seq_args(first, last))

    def render(self, t: float, window: list[int] | None = None) -> tuple[int, np.ndarray | None]:
        f = self.source.frames.get(int(t))
        if window is None:
            x0, y0 = self.source.origin
            window = [x0, y0, x0 + f.shape[1], y0 + f.shape[0]]
        in_args = Props(self.host, "Render inArgs", {
            "OfxPropTime": ("dbl", float(t)), "OfxImageEffectPropFieldToRender": ("str", "OfxImageFieldNone"),
            "OfxImageEffectPropRenderWindow": ("int", window), "OfxImageEffectPropRenderScale": ("dbl", [1.0, 1.0]),
            "OfxImageEffectPropSequentialRenderStatus": ("int", 0),
            "OfxImageEffectPropInteractiveRenderStatus": ("int", 0),
            "OfxImageEffectPropRenderQualityDraft": ("int", 0)})
        st = self.host.call("OfxImageEffectActionRender", self.effect.handle, in_args)
        img = self.output.rendered.pop(float(t), None)
        return st, (img.pixels() if img is not None else None)

    def outstanding(self) -> int:
        return len(self.source.outstanding) + len(self.output.outstanding)

    def destroy(self) -> int:
        return self.host.call("OfxActionDestroyInstance", self.effect.handle)


# ---- scenario (run in a subprocess by the sanitizer test) --------------------------------

def to_rgba(frame: np.ndarray, dtype) -> np.ndarray:
    """H x W x 3 uint8 -> H x W x 4 in the given depth, opaque."""
    rgba = np.concatenate([frame, np.full(frame.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    return rgba if dtype == np.uint8 else (rgba.astype(np.float32) / np.float32(255))


def hanging_server(path: str) -> socket.socket:
    """A socket that accepts connections and never answers (a hung engine)."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    held: list = []

    def loop():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            held.append(conn)  # kept open, never answered
    threading.Thread(target=loop, daemon=True).start()
    return srv


def setup(host: OfxHost, frames: dict[int, np.ndarray], styles: list[str], **kw) -> Instance:
    inst = host.create_instance(frames, **kw)
    for i, s in enumerate(styles, 1):
        inst.set_value(f"style{i}", s)
    return inst


def scenario(bundle_binary: str, shim: str, frames_u8: np.ndarray, styles: list[str], weight_keys: dict,
             strength: float) -> tuple[dict, dict]:
    """The sanitizer run: describe, analyse, render 8-bit and float with odd layouts, failures."""
    arrays, report = {}, {"problems": [], "statuses": {}, "messages": {}, "outstanding": 0, "fetches": {}}
    host = OfxHost(bundle_binary, shim)
    assert host.load() == OK
    host.describe()
    host.describe_in_context(FILTER)
    for dtype, layout, out_layout in ((np.uint8, "negative", "padded"), (np.float32, "padded", "negative")):
        tag = np.dtype(dtype).name
        frames = {t: to_rgba(f, dtype) for t, f in enumerate(frames_u8)}
        inst = setup(host, frames, styles, layout=layout, out_layout=out_layout)
        inst.set_value("strength", strength)
        for name, keys in weight_keys.items():
            inst.set_keys(name, {float(k): v for k, v in keys.items()})
        report["statuses"][f"{tag}_needed"], needed = inst.frames_needed(0)
        report["fetches"][f"{tag}_needed"] = needed
        report["statuses"][f"{tag}_analyze"] = inst.user_edit("analyze")
        report["fetches"][f"{tag}_analyze"] = [t for t, _ in inst.source.fetches]
        inst.source.fetches.clear()
        inst.begin_sequence(inst.first, inst.last)
        for t in sorted(frames):
            st, out = inst.render(t)
            report["statuses"][f"{tag}_render_{t}"] = st
            if out is not None:
                arrays[f"{tag}_{t}"] = out
        inst.end_sequence(inst.first, inst.last)
        report["fetches"][f"{tag}_render"] = [t for t, _ in inst.source.fetches]
        report["outstanding"] += inst.outstanding()
        inst.destroy()

    # premultiplied sources with alpha from 0 to 1 (colours above alpha too): divided and multiplied back
    for dtype in (np.uint8, np.float32):
        tag = np.dtype(dtype).name
        frames = {t: to_rgba(f, dtype) for t, f in enumerate(frames_u8[:2])}
        for f in frames.values():
            ramp = np.linspace(0, 1, f.shape[1], dtype=np.float32)
            f[..., 3] = (ramp * 255).round() if dtype == np.uint8 else ramp
        inst = setup(host, frames, styles, layout="negative")
        inst.source.premult = "OfxImageAlphaPremultiplied"
        inst.set_value("consistency", 0)
        report["statuses"][f"premultiplied_{tag}"], out = inst.render(1)
        if out is not None:
            arrays[f"premultiplied_{tag}"] = out
            report[f"premultiplied_{tag}_alpha_kept"] = bool(np.array_equal(out[..., 3], frames[1][..., 3]))
        report["outstanding"] += inst.outstanding()
        inst.destroy()

    # failures: no engine to start, then an engine that never answers
    saved = {k: os.environ.get(k) for k in ("VST_SERVICE_SOCKET", "VST_ENGINE_PYTHON", "VST_SERVICE_TIMEOUT")}
    with tempfile.TemporaryDirectory() as tmp:
        frames = {t: to_rgba(f, np.uint8) for t, f in enumerate(frames_u8[:3])}
        os.environ.update(VST_SERVICE_SOCKET=f"{tmp}/missing/engine.sock", VST_ENGINE_PYTHON="/nonexistent/python")
        inst = setup(host, frames, styles)
        inst.set_value("consistency", 0)
        n = len(host.messages)
        report["statuses"]["missing"] = inst.render(0)[0]
        report["messages"]["missing"] = [m[1] for m in host.messages[n:]]
        report["outstanding"] += inst.outstanding()
        inst.destroy()
        srv = hanging_server(f"{tmp}/hang.sock")
        os.environ.update(VST_SERVICE_SOCKET=f"{tmp}/hang.sock", VST_SERVICE_TIMEOUT="1")
        inst = setup(host, frames, styles)
        inst.set_value("consistency", 0)
        n = len(host.messages)
        report["statuses"]["hang"] = inst.render(0)[0]
        report["messages"]["hang"] = [m[1] for m in host.messages[n:]]
        report["outstanding"] += inst.outstanding()
        inst.destroy()
        srv.close()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    host.unload()
    report["problems"] = host.problems
    return arrays, report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run the OpenFX test scenario against a plugin binary")
    ap.add_argument("--binary", required=True)
    ap.add_argument("--shim", required=True)
    ap.add_argument("--input", required=True, help=".npz with frames (N x H x W x 3 uint8), styles, weight keys")
    ap.add_argument("--out", required=True, help=".npz of rendered frames plus a JSON report")
    args = ap.parse_args(argv)
    data = np.load(args.input, allow_pickle=False)
    spec = json.loads(str(data["spec"]))
    start = time.monotonic()
    arrays, report = scenario(args.binary, args.shim, data["frames"], spec["styles"], spec["weight_keys"],
                              spec["strength"])
    report["seconds"] = time.monotonic() - start
    maps = Path("/proc/self/maps")
    report["asan_loaded"] = maps.is_file() and "libasan" in maps.read_text()
    np.savez(args.out, report=json.dumps(report), **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main())
