#!/usr/bin/env bash
# One prepared run of cnnctl on the GPU machine (JAX backend, no TensorFlow there), in one go:
#   1. the README walk-through: check, train the quickstart, eval, predict, explain (CAM), report;
#      any non-zero exit or any traceback in a step's output fails the script;
#   2. `python bench/run.py` for the MNIST CNN on Fashion-MNIST at batch 64 and 512, cnnctl beside
#      plain Keras (JAX) and the hand-written PyTorch loop;
#   3. configs/cifar10_fast.yaml for three seeds on the CIFAR-10 JPEG copy: test accuracy (flip
#      TTA) and training time of each.
# Everything goes under $OUT (default: a new temporary folder): one log per step, the bench
# tables (bench-batch-64.md, bench-batch-512.md), the runs, and summary.md, the figures of all three parts.
#
#   bash bench/gpu.sh                      # on the GPU machine, through the device tool
#   bash bench/gpu.sh --tiny               # on any CPU, in minutes: the same steps, tiny settings
#   bash bench/gpu.sh --tiny --hide-tensorflow   # ... as on the GPU machine, where TensorFlow is absent
#
# Options: --data-dir DIR (fashion-mnist/ and cifar10-jpg.tar.gz; default ../shared/data beside
# the repository, else .data/ in it), --wheels DIR (wheels installed with pip --no-index into a
# temporary site folder first; default .whl/ when it holds any: see bench/gpu_wheels.sh),
# --seeds "1 2 3", --skip walkthrough,bench,cifar.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
tiny=0 hide_tf=0 data_dir="" wheels="" seeds="1 2 3" skip=""
while [ $# -gt 0 ]; do
    case "$1" in
        --tiny) tiny=1 ;;
        --hide-tensorflow) hide_tf=1 ;;
        --data-dir) data_dir=$2; shift ;;
        --wheels) wheels=$2; shift ;;
        --seeds) seeds=$2; shift ;;
        --skip) skip=$2; shift ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench/gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

out=${OUT:-$(mktemp -d /tmp/cnnctl-gpu.XXXXXX)}
mkdir -p "$out"
work=$(mktemp -d /tmp/cnnctl-gpu-work.XXXXXX)
trap 'rm -rf "$work"' EXIT
summary=$out/summary.md
failed=0

if [ -z "$data_dir" ]; then
    for d in "$repo/../shared/data" "$repo/shared/data" "$repo/.data"; do
        [ -d "$d/fashion-mnist" ] && { data_dir=$(cd "$d" && pwd); break; }
    done
fi
if [ -z "$data_dir" ] || [ ! -d "$data_dir/fashion-mnist" ]; then
    echo "bench/gpu.sh: no data folder with fashion-mnist/ (looked in ../shared/data, shared/data, .data); pass --data-dir" >&2
    exit 2
fi

# ------------------------------------------------------------------ the Python environment
if [ -z "$wheels" ] && compgen -G "$repo/.whl/*.whl" > /dev/null; then
    wheels=$repo/.whl
fi
if [ -n "$wheels" ]; then
    site=$work/site
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "$wheels"/*.whl > "$out/00-wheels.log" 2>&1 \
        || { echo "bench/gpu.sh: installing the wheels of $wheels failed (see $out/00-wheels.log)" >&2; exit 1; }
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ "$hide_tf" = 1 ]; then
    # a `tensorflow` that cannot be imported, first on the path: the GPU machine has none
    mkdir -p "$work/no_tf/tensorflow"
    echo 'raise ModuleNotFoundError("No module named '"'"'tensorflow'"'"' (hidden by bench/gpu.sh --hide-tensorflow)", name="tensorflow")' \
        > "$work/no_tf/tensorflow/__init__.py"
    export PYTHONPATH=$work/no_tf${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH}
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
cnnctl() { "$python" -m cnnctl "$@"; }

# Run one step: its output into $out/NN-name.log; fail on a non-zero exit or a traceback.
step_no=0
step() {
    local name=$1; shift
    step_no=$((step_no + 1))
    local log
    log=$out/$(printf '%02d' $step_no)-$name.log
    local start=$SECONDS
    "$@" > "$log" 2>&1
    local rc=$?
    if [ $rc -ne 0 ] || grep -q "^Traceback" "$log"; then
        echo "- FAILED: $name (exit $rc, $((SECONDS - start)) s; $log)" | tee -a "$summary"
        tail -n 15 "$log" | sed 's/^/    /'
        failed=1
        return 1
    fi
    echo "- ok: $name ($((SECONDS - start)) s)" | tee -a "$summary"
}

{
    echo "# bench/gpu.sh $( [ $tiny = 1 ] && echo '--tiny ')on $(hostname), $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "- commit $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$repo" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    "$python" -c 'import sys, platform; print(f"- Python {platform.python_version()}")'
    "$python" -c 'import keras, jax; print(f"- keras {keras.__version__}, jax {jax.__version__}, devices: {jax.devices()}")' 2>&1 | head -1
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/- GPU: /'
    echo
} > "$summary"
cat "$summary"

mkdir -p "$work/data"
tar xzf "$data_dir/cifar10-jpg.tar.gz" -C "$work/data" \
    || { echo "bench/gpu.sh: cannot extract $data_dir/cifar10-jpg.tar.gz" >&2; exit 2; }
cifar=$work/data/cifar10-jpg

# ------------------------------------------------------------------ 1. the README walk-through
if [[ ",$skip," != *,walkthrough,* ]]; then
    echo "## Walk-through (JAX)" | tee -a "$summary"
    run=$work/runs/quickstart
    epochs=$([ $tiny = 1 ] && echo 1 || echo 8)
    sample=$work/sample.png
    "$python" - "$sample" "$repo/cnnctl/data/fashion_mnist_small.npz" <<'PY'
import sys, numpy as np
from PIL import Image
with np.load(sys.argv[2]) as data:  # the quickstart's own test images
    Image.fromarray(np.asarray(data["x_test"][0], np.uint8).squeeze()).save(sys.argv[1])
PY
    step check cnnctl check configs/quickstart.yaml
    step train cnnctl train configs/quickstart.yaml --run-dir "$run" --set train.epochs=$epochs
    step eval cnnctl eval "$run"
    step predict cnnctl predict "$run" "$sample" --top-k 3 --json
    step report cnnctl report "$run" --out "$out/report.html"
    # CAM needs a network ending in global average pooling and a dense layer (Grad-CAM needs
    # TensorFlow): ResNet-20, one epoch on 1,024 CIFAR-10 JPEGs (256 with --tiny)
    resnet=$work/runs/resnet20
    step train-resnet20 cnnctl train configs/resnet20_cifar10.yaml --run-dir "$resnet" \
        --set data.source=folder --set data.train_dir="$cifar/train" --set data.test_dir="$cifar/test" \
        --set data.max_train_samples=$([ $tiny = 1 ] && echo 256 || echo 1024) \
        --set data.max_test_samples=$([ $tiny = 1 ] && echo 64 || echo 256) --set train.epochs=1 \
        --set train.tensorboard=false
    step explain-cam cnnctl explain "$resnet" "$(ls "$cifar"/test/*/*.jpg | head -1)" \
        --method cam --out "$out/explain"
    echo | tee -a "$summary"
fi

# ------------------------------------------------------------------ 2. MNIST CNN, batch 64 and 512
if [[ ",$skip," != *,bench,* ]]; then
    echo "## MNIST CNN on Fashion-MNIST: cnnctl (JAX) beside plain Keras (JAX) and the PyTorch loop" | tee -a "$summary"
    bench_args=(--only mnist_cnn --backends jax,torch --data-dir "$data_dir")
    [ $tiny = 1 ] && bench_args+=(--small --train-samples 1024 --epochs 2)
    for batch in 64 512; do
        step "bench-batch-$batch" "$python" bench/run.py "${bench_args[@]}" --batch-size $batch \
            --out "$out/bench-batch-$batch.md" \
            && grep -E '^\| (contender|---|plain|cnnctl|PyTorch)' "$out/bench-batch-$batch.md" \
               | sed "s/^/    /" | tee -a "$summary" > /dev/null
    done
    echo "(tables: bench-batch-64.md, bench-batch-512.md)" | tee -a "$summary"
    echo | tee -a "$summary"
fi

# ------------------------------------------------------------------ 3. cifar10_fast, three seeds
if [[ ",$skip," != *,cifar,* ]]; then
    echo "## configs/cifar10_fast.yaml on the CIFAR-10 JPEG copy" | tee -a "$summary"
    sets=(--set data.train_dir="$cifar/train" --set data.test_dir="$cifar/test")
    [ $tiny = 1 ] && sets+=(--set data.max_train_samples=256 --set data.max_test_samples=128
                            --set train.epochs=1 --set train.batch_size=128)
    echo "| seed | test accuracy (flip TTA) | training seconds | epochs |" >> "$summary"
    echo "| --- | --- | --- | --- |" >> "$summary"
    for seed in $seeds; do
        run=$work/runs/cifar10_fast_$seed
        if step "cifar10-fast-seed-$seed" cnnctl train configs/cifar10_fast.yaml --run-dir "$run" \
                "${sets[@]}" --set train.seed=$seed --set train.tensorboard=false; then
            "$python" - "$run" "$seed" >> "$summary" <<'PY'
import json, sys
metrics = json.load(open(f"{sys.argv[1]}/metrics.json"))
seconds = metrics["history"]["epoch_seconds"]
print(f"| {sys.argv[2]} | {metrics['test']['accuracy']:.4f} | {sum(seconds):.1f} "
      f"(first epoch, with compilation, {seconds[0]:.1f}) | {metrics['epochs']} |")
PY
        fi
    done
    echo | tee -a "$summary"
fi

cp -r "$work/runs" "$out/runs" 2>/dev/null
echo "summary: $summary"
[ $failed = 0 ] && echo "bench/gpu.sh: every step passed" || echo "bench/gpu.sh: some steps FAILED (see above)"
exit $failed
