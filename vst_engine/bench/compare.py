"""This run against an earlier one (`--previous RESULTS_JSON`): which measures got worse beyond a
tolerance, which got better, and what could not be compared (other settings, another machine)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import VstError
from .quality import aggregate

# Relative tolerances. The quality tables are deterministic: in fp32 a 2-core AVX2 CPU (NNPACK) and a
# 2-core AVX-512 one (oneDNN) gave every mean loss of the default and baseline models within 3e-6 of
# each other. Between precisions (bf16 on AMX CPUs, fp32 elsewhere; frames about one grey level
# apart) the difference is not measured, so those comparisons allow at least 3%. Speed on the
# shared 2-core CPUs moved by 20-40% between processes (docs/benchmarks-avx512), so only a larger
# loss is called a regression there, and a CPU row that looks slower is timed again (`bench.command`).
# A process's peak RSS moved by -25% to +18% between two runs of the same code on one machine; CUDA's
# peak allocation is the same from run to run.
QUALITY_TOLERANCE = 0.01
OTHER_PRECISION_TOLERANCE = 0.03
SPEED_TOLERANCE = 0.25
MEMORY_TOLERANCE = {"rss_peak_mib": 0.3, "cuda_peak_mib": 0.1}
# Settings that make two quality (or Sintel) tables comparable when equal (the clips and styles
# are compared run by run).
QUALITY_SETTINGS = ("frames", "max_side", "vgg_frames")
SINTEL_SETTINGS = ("sintel_scenes", "sintel_passes", "sintel_max_side")
# A speed row's identity: two rows with equal values time the same thing.
ROW_KEY = ("what", "arch", "batch", "default", "own_colours", "added", "overlap")
# The machine a CPU row was timed on (environment fields; absent ones are not compared).
CPU_FIELDS = ("cpu_model", "cpu_count", "cpu_capability", "cpu_amx", "cpu_compiled", "torch")
OURS = ("ours", "ours_noglobal", "ours_deflicker", "ours_deflicker_steady", "ours_pershot", "baseline",
        "baseline_noglobal", "lite", "lite_noglobal")


@dataclass
class Change:
    """One compared measure; `worse` and `better` are beyond the tolerance."""
    measure: str
    before: float
    after: float
    lower_is_better: bool
    tolerance: float
    counts: bool = True  # False: reported, never a regression (the peer, the unstylized input)

    @property
    def relative(self) -> float:
        return self.after / self.before - 1 if self.before else 0.0

    @property
    def worse(self) -> bool:
        return (self.relative if self.lower_is_better else -self.relative) > self.tolerance

    @property
    def better(self) -> bool:
        return (-self.relative if self.lower_is_better else self.relative) > self.tolerance


def load_previous(path: str | Path) -> dict:
    """The results.json of an earlier run; VstError if it is not one."""
    try:
        res = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise VstError(f"--previous {path}: cannot read it ({exc})") from None
    if not _is_results(res):
        raise VstError(f"--previous {path}: not a results.json of `python -m vst_engine.bench`")
    return res


def _is_results(res) -> bool:
    """Whether `res` has the parts of a results.json that a comparison reads, of the right types."""
    def table_ok(q) -> bool:
        return isinstance(q, dict) and isinstance(q.get("clips"), list) and all(
            isinstance(c, dict) and isinstance(c.get("runs"), list) and "clip" in c and all(
                isinstance(r, dict) and "method" in r and isinstance(r.get("temporal"), dict) for r in c["runs"])
            for c in q["clips"])

    def row_ok(r) -> bool:
        return isinstance(r, dict) and {"what", "size", "device"} <= r.keys() and ("fps" in r or "error" in r)
    if not isinstance(res, dict) or not isinstance(res.get("settings"), dict) or \
            not isinstance(res.get("environment"), dict):
        return False
    speed = res.get("speed")
    return all(table_ok(res[t]) for t in ("quality", "sintel", "flicker", "shots") if res.get(t)) and \
        (not speed or isinstance(speed, dict) and isinstance(speed.get("rows"), list)
         and all(row_ok(r) for r in speed["rows"]))


def compare(res: dict, prev: dict, quality_tol: float = QUALITY_TOLERANCE,
            speed_tol: float = SPEED_TOLERANCE) -> dict:
    """The comparison stored in results.json as "comparison": every compared Change (as dicts), the
    regressions' names, and notes on what was left out and why."""
    changes: list[Change] = []
    notes: list[str] = []
    before_id, after_id = prev.get("model", {}).get("model_id"), res.get("model", {}).get("model_id")
    if before_id != after_id:
        notes.append(f"our model changed: {before_id} -> {after_id}")
    for name in ("baseline", "lite"):  # the compared models' weights
        ids = [r.get("status", {}).get(name, {}).get("model_id") for r in (prev, res)]
        if all(ids) and ids[0] != ids[1]:
            notes.append(f"the {name} model changed: {ids[0]} -> {ids[1]}")
    for table, fields, title in (("quality", QUALITY_SETTINGS, "quality table"),
                                 ("flicker", QUALITY_SETTINGS, "exposure flicker table"),
                                 ("shots", QUALITY_SETTINGS, "shots table"),
                                 ("sintel", SINTEL_SETTINGS, "MPI Sintel table")):
        if res.get(table) and prev.get(table):
            differ = [f for f in fields if res["settings"].get(f) != prev["settings"].get(f)]
            if differ:
                notes.append(f"{title} not compared: other {', '.join(differ)}")
            else:
                precisions = [r["environment"].get("cpu_precision", "fp32") for r in (prev, res)]
                tol = quality_tol
                if precisions[0] != precisions[1]:
                    tol = max(quality_tol, OTHER_PRECISION_TOLERANCE)
                    notes.append(f"{title} computed in {precisions[0]} before, in {precisions[1]} now: "
                                 f"compared at a tolerance of {tol:.0%}")
                changes += _quality_changes(res, prev, table, title, tol, notes)
    if res.get("speed") and prev.get("speed"):
        changes += _speed_changes(res, prev, speed_tol, notes)
    return {"date": prev.get("date"), "quality_tolerance": quality_tol, "speed_tolerance": speed_tol,
            "memory_tolerance": MEMORY_TOLERANCE, "notes": notes,
            "changes": [dict(vars(c), relative=c.relative, worse=c.worse, better=c.better) for c in changes],
            "regressions": [c.measure for c in changes if c.worse and c.counts]}


def _quality_changes(res: dict, prev: dict, table: str, title: str, tol: float, notes: list[str]) -> list[Change]:
    """Each method's losses, averaged over the clip and style pairs that both runs measured on the same
    clip data: a style missing from one run (its data absent) or a clip of other content would move
    every mean (the peer's and the input's too)."""
    now, then = res[table], prev[table]
    data = [{c["name"]: (c.get("sha256"), c.get("excerpt_start"), c.get("frames")) for c in r.get("clips", [])}
            for r in (res, prev)]
    other_data = sorted(name for name in data[0] if name in data[1] and data[0][name] != data[1][name])

    def pairs(q: dict) -> set:
        return {(c["clip"], r["method"], r["style"]) for c in q["clips"] if c["clip"] not in other_data
                for r in c["runs"]}
    measured = pairs(now), pairs(then)
    common = measured[0] & measured[1]
    if other_data:
        notes.append(f"{title}: {', '.join(other_data)} left out (other clip data)")
    left_out = sorted({f"{clip} x {style}" for clip, _, style in measured[0] ^ measured[1] if style})
    if left_out:
        notes.append(f"{title} compared on the clips and styles both runs measured; left out: {', '.join(left_out)}")

    def kept(q: dict) -> list[dict]:
        return [dict(c, runs=[r for r in c["runs"] if (c["clip"], r["method"], r["style"]) in common])
                for c in q["clips"]]
    intervals = [i for i in now.get("intervals", [1]) if i in then.get("intervals", [1])]
    out = []
    for method in dict.fromkeys(r["method"] for c in now["clips"] for r in c["runs"]):  # the table's order
        agg, old = (aggregate(kept(q), method, intervals) for q in (now, then))
        if not agg or not old:
            continue
        values = [(f"temporal i={i}", agg["temporal"].get(str(i)), old["temporal"].get(str(i))) for i in intervals]
        values += [(name.replace("_", " "), agg.get(name), old.get(name)) for name in ("style_loss", "content_loss")]
        out += [Change(f"{title}, {method}: {name}", b, a, True, tol, counts=method in OURS)
                for name, a, b in values if a is not None and b is not None]
    return out


def _speed_changes(res: dict, prev: dict, tol: float, notes: list[str]) -> list[Change]:
    """fps and peak memory of the rows both runs timed on the same kind of machine, and the analysis's
    share of a clip."""
    out = []
    skipped: dict[str, set[str]] = {}
    devices = set()
    for _, row, old in comparable_rows(res, prev, skipped):
        device = row["device"].split(":")[0]
        devices.add(device)
        name = _row_name(row)
        peer = row["what"] == "peer"  # the peer is a gauge of the machine's speed, not ours
        out.append(Change(f"{name}: frames/s", old["fps"], row["fps"], False, tol, counts=not peer))
        if row.get("timed_again_fps"):
            notes.append(f"{name} was timed twice, as it looked slower: {row['timed_again_fps']:.4g} and "
                         f"{row['fps']:.4g} frames/s (the faster counts)")
        for mem, label in (("rss_peak_mib", "RSS"), ("cuda_peak_mib", "CUDA")):
            if row.get(mem) and old.get(mem):
                out.append(Change(f"{name}: {label} peak MiB", old[mem], row[mem], True, MEMORY_TOLERANCE[mem],
                                  counts=not peer))
    new = [r for r in res["speed"].get("rows", []) if "error" not in r and _counterpart(r, prev) is None]
    if new:
        notes.append("not in the previous run (other sizes, devices or variants): "
                     + ", ".join(sorted({_row_name(r) for r in new})))
    if "cpu" in devices and "cpu_capability" not in prev["environment"]:
        notes.append("the previous run does not record the CPU's vector extensions (AVX2, AVX-512, AMX): "
                     "its CPU is taken to be of the same kind where the model name and core count match")
    notes += sorted(set().union(*skipped.values()))
    old_shares = {(label, tuple(size)): f for label, size, f in prev["speed"].get("overhead_values", [])}
    for label, size, share in res["speed"].get("overhead_values", []):
        old = old_shares.get((label, tuple(size)))
        if old is not None and label.split()[0] not in skipped:
            out.append(Change(f"{label} {size[0]}x{size[1]}: analysis share of a 132-frame clip, %", 100 * old,
                              100 * share, True, tol))
    return out


def comparable_rows(res: dict, prev: dict,
                    skipped: dict[str, set[str]] | None = None) -> Iterator[tuple[int, dict, dict]]:
    """(index, row, previous row) for each speed row of `res` that `prev` timed too, on the same kind
    of machine; `skipped` collects, per device, why its other rows were not compared."""
    env, old_env = res["environment"], prev["environment"]
    cpu_differs = [f for f in CPU_FIELDS if f in env and f in old_env and env[f] != old_env[f]]
    for index, row in enumerate(res["speed"].get("rows", [])):
        old = _counterpart(row, prev)
        if old is None or "error" in row or "error" in old:
            continue
        device = row["device"].split(":")[0]
        if device == "cpu":
            differs = cpu_differs + [f for f in ("threads", "precision") if row.get(f) != old.get(f)]
        else:
            differs = ["GPU"] if row.get("device_name") != old.get("device_name") else []
        if differs and skipped is not None:
            skipped.setdefault(device, set()).add(f"{device} speed not compared: other {', '.join(differs)}")
        if not differs:
            yield index, row, old


def slower_cpu_rows(res: dict, prev: dict, tol: float) -> list[int]:
    """Indices of our CPU speed rows that ran slower than `prev`'s beyond `tol`: worth timing again,
    as a shared CPU's speed moves between processes."""
    return [i for i, row, old in comparable_rows(res, prev) if row["device"] == "cpu" and row["what"] != "peer"
            and row["fps"] < old["fps"] * (1 - tol)]


def _counterpart(row: dict, prev: dict) -> dict | None:
    """The row of `prev` that timed what `row` times, if any."""
    return next((r for r in prev["speed"].get("rows", []) if _same_row(r, row)), None)


def _same_row(a: dict, b: dict) -> bool:
    return all(_key(a, k) == _key(b, k) for k in ROW_KEY) and tuple(a.get("size", ())) == tuple(b.get("size", ())) \
        and a.get("device", "").split(":")[0] == b.get("device", "").split(":")[0]


def _key(row: dict, name: str):
    """A field of a speed row's identity. Analysis rows from before batched analysis (CUDA reports
    until 2026-11-27) have no batch: they analysed one frame a pass."""
    if name == "batch" and row.get("what") == "analyze":
        return row.get("batch", 1)
    return row.get(name)


def _row_name(row: dict) -> str:
    """"cpu stylize (lite model) 640x360, with own colours" and the like."""
    return f"{row['device'].split(':')[0]} {row['what']}{' (lite model)' if row.get('arch') == 'lite' else ''} " \
           f"{row['size'][0]}x{row['size'][1]}{_variant(row)}"


def _variant(row: dict) -> str:
    """What tells a speed row from the others of its size: ", own colours, batch 4" and the like."""
    parts = []
    if row.get("own_colours"):
        parts.append("own colours added" if row.get("added") else "with own colours")
    if row.get("batch") and row["device"] != "cpu":
        parts.append(f"batch {row['batch']}")
    if row.get("overlap") is False:
        parts.append("each batch waited for")
    return ", " + ", ".join(parts) if parts else ""
