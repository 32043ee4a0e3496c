#!/usr/bin/env bash
# Throughput benchmark on one GPU machine, within about 8 minutes, installing nothing.
#
# Needs: an NVIDIA GPU and driver, and a Python with tensorflow[and-cuda]==2.21.0 (TensorFlow plus
# its CUDA 12 libraries) and this repo's requirements, e.g. on a user's workstation or a cluster
# node. Without them it exits at once with NO-TENSORFLOW (exit 3) or NO-GPU (exit 4) and why.
#
# It cannot run on the lent GPU machines of this workplace (H100 / H200): they have Python 3.12,
# PyTorch and JAX but no TensorFlow and no network, and only 64 MiB can be carried to them, so
# the TensorFlow wheel (~600 MB) plus its CUDA 12 libraries (~3 GB) cannot reach them.
#
#   1. ResNet-50, 64 px, batch 32: ours / limit / legacy, plus augmentation alone at 224 px
#      (the workflow's layer, under XLA like training on a GPU)
#   2. ResNet-50, 224 px, batch 32: ours / limit / legacy, plus one full epoch of 11,959
#      synthetic images (and validation of 1,712) through the real path
#   3. k = 1, 2, 4 concurrent 64 px training processes on the one card (memory growth on):
#      total images/s, timed together after every process has warmed up (a file barrier)
#
# Usage: bash benchmarks/gpu.sh           (PYTHON=/path/to/python to use another interpreter)
# Writes r64.json, r224.json, kjobs.json, gpu.log and nvidia-smi.csv to $OUT when set, else to
# benchmarks/results/gpu/.
set -u
cd "$(dirname "$0")/.."

OUT_DIR=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PY=${PYTHON:-.venv/bin/python}
BUDGET_S=${BUDGET_S:-470}      # stop starting new stages after this many seconds
START=$(date +%s)
exec > >(tee -a "$OUT_DIR/gpu.log") 2>&1
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
# The same graphs (64 px ours) compile in stages 1 and 3: let XLA reuse them across processes.
export TF_XLA_FLAGS="${TF_XLA_FLAGS:-} --tf_xla_persistent_cache_directory=$WORK/xla-cache"

elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET_S - $(elapsed) )); }

echo "== gpu.sh $(date -u +%FT%TZ) on $(hostname), $(nproc) cores"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/nvidia-smi.csv"
else
    echo "nvidia-smi: not found"
fi

if [ ! -x "$PY" ] || ! "$PY" -c "import tensorflow, keras" 2>/dev/null; then
    echo "NO-TENSORFLOW: '$PY' cannot import tensorflow and keras. Nothing was measured."
    echo "This script installs nothing. It needs a GPU machine whose Python has tensorflow[and-cuda]==2.21.0"
    echo "and requirements.txt installed (e.g. a workstation or a cluster node); point PYTHON=... at it."
    echo "The lent H100/H200 machines of this workplace cannot provide that: Python 3.12 with PyTorch and JAX"
    echo "but no TensorFlow, no network, and only 64 MiB carried, too little for the TF wheel (~600 MB) plus"
    echo "its CUDA 12 libraries (~3 GB)."
    exit 3
fi
if ! "$PY" - <<'EOF'
import sys
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print("tensorflow", tf.__version__, "build", dict(tf.sysconfig.get_build_info()).get("cuda_version"), "GPUs:", gpus)
sys.exit(0 if gpus else 1)
EOF
then
    echo "NO-GPU: TensorFlow at '$PY' sees no GPU. pip's tensorflow wheel needs the CUDA 12 libraries of the"
    echo "tensorflow[and-cuda] extra (nvidia-*-cu12 packages, about 3 GB) in the same environment; a CPU-only"
    echo "copy of the environment, or CUDA 13 libraries, are not enough; an NVIDIA driver must be present."
    echo "Install tensorflow[and-cuda]==2.21.0 there. Nothing was measured."
    exit 4
fi

BENCH=("$PY" benchmarks/throughput.py --arch resnet50 --batch 32 --threads "$(nproc)")

echo "== 1/3 ResNet-50 64 px, batch 32, all variants + augmentation alone at 224 px  (t=$(elapsed)s)"
timeout 200 "${BENCH[@]}" --size 64 --steps 100 --repeats 3 --augment-size 224 --augment-steps 20 \
    --name gpu-resnet50-64px-bs32 --out "$OUT_DIR/r64.json" || echo "stage 1 failed or timed out (rc $?)"

if [ "$(left)" -gt 150 ]; then
    echo "== 2/3 ResNet-50 224 px, batch 32, all variants + one epoch of 11,959 images  (t=$(elapsed)s)"
    timeout $(( $(left) - 120 )) "${BENCH[@]}" --size 224 --steps 40 --repeats 3 --augment-size 0 \
        --epoch-images 11959 --epoch-val-images 1712 \
        --name gpu-resnet50-224px-bs32 --out "$OUT_DIR/r224.json" || echo "stage 2 failed or timed out (rc $?)"
else
    echo "== 2/3 skipped: $(left) s left"
fi

echo "== 3/3 k concurrent 64 px jobs on one card  (t=$(elapsed)s)"
for k in 1 2 4; do
    if [ "$(left)" -lt 40 ]; then echo "k=$k skipped: $(left) s left"; continue; fi
    threads=$(( $(nproc) / k )); [ "$threads" -ge 1 ] || threads=1
    pids=()
    for i in $(seq 1 "$k"); do
        timeout $(( $(left) )) "$PY" benchmarks/throughput.py --arch resnet50 --batch 32 --size 64 --steps 100 --repeats 3 \
            --variants ours --augment-size 0 --threads "$threads" --barrier "$WORK/barrier-$k" --barrier-count "$k" \
            --name "k${k}-job${i}" --out "$WORK/k${k}-job${i}.json" > "$WORK/k${k}-job${i}.log" 2>&1 &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || echo "k=$k: a job failed (rc $?)"; done
    tail -n 1 "$WORK"/k"${k}"-job*.log
done

"$PY" - "$WORK" "$OUT_DIR/kjobs.json" <<'EOF'
import json, sys
from pathlib import Path
work, out = Path(sys.argv[1]), Path(sys.argv[2])
summary = {"what": "k concurrent ResNet-50 64 px batch-32 training processes (ours) on one GPU, memory growth on",
           "k": {}}
for k in (1, 2, 4):
    jobs = [json.loads(p.read_text()) for p in sorted(work.glob(f"k{k}-job*.json"))]
    if not jobs:
        continue
    rates = [j["training"]["ours"]["images_per_s"] for j in jobs]
    starts = [j["training"]["ours"]["wall_start"] for j in jobs]
    ends = [j["training"]["ours"]["wall_end"] for j in jobs]
    overlap = max(0.0, min(ends) - max(starts)) / max(1e-9, max(ends) - min(starts))
    summary["k"][str(k)] = {"jobs_finished": len(jobs), "per_job_images_per_s": rates,
                            "total_images_per_s": sum(rates), "timed_window_overlap": overlap,
                            "threads_per_job": jobs[0]["settings"]["threads"]}
    summary.setdefault("hardware", jobs[0]["hardware"])
    summary.setdefault("versions", jobs[0]["versions"])
base = summary["k"].get("1", {}).get("total_images_per_s")
for k, row in summary["k"].items():
    row["gain_vs_k1"] = row["total_images_per_s"] / base if base else None
    print(f"k={k}: total {row['total_images_per_s']:.1f} images/s  (x{row['gain_vs_k1'] or float('nan'):.2f} of k=1; "
          f"timed windows overlap {row['timed_window_overlap']:.0%})")
out.write_text(json.dumps(summary, indent=1) + "\n")
EOF

echo "== summary  (t=$(elapsed)s)"
for f in "$OUT_DIR"/r64.json "$OUT_DIR"/r224.json; do
    [ -f "$f" ] && "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['name'], {k: round(v['images_per_s'],1) for k,v in r['training'].items()}, r['summary_line'], 'epoch:', r['epoch'] and round(r['epoch']['epoch_seconds'],1))" "$f"
done
rm -rf "$WORK"
