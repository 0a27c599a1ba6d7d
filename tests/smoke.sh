#!/usr/bin/env bash
# Smoke test of the installed `cnnctl` console script: README's walk-through on the quickstart
# data shipped in the package, one command at a time, as a user types it.
#
#   bash tests/smoke.sh [CNNCTL]        (default: .venv/bin/cnnctl)
#
# Every command must exit 0 (one user mistake must exit 2) with no "Traceback" in its output,
# and the files it was asked to write must exist. One PASS/FAIL line per command; all commands
# run, and the script exits 1 at the end if any failed. It uses the newest run under
# runs/quickstart/ (the README's first command makes one), or trains one if there is none, and
# works on a copy of it: everything it writes lies in a temporary folder, removed at exit.
# SMOKE_TIMEOUT: seconds allowed to one command (default 900).
set -uo pipefail

CNNCTL=${1:-.venv/bin/cnnctl}
if [[ $CNNCTL == */* ]]; then
  CNNCTL=$(cd "$(dirname "$CNNCTL")" && pwd)/$(basename "$CNNCTL")
fi
if [[ ! -x $CNNCTL ]]; then
  echo "smoke: $CNNCTL is not an executable (make the venv first: see README.md)" >&2
  exit 2
fi
PYTHON=$(dirname "$CNNCTL")/python  # the venv's interpreter, for making test images
cd "$(dirname "$0")/.."
REPO=$PWD
TIMEOUT=${SMOKE_TIMEOUT:-900}  # seconds per command

S=$(mktemp -d "${TMPDIR:-/tmp}/cnnctl-smoke.XXXXXX")
# SMOKE_KEEP=1 keeps the scratch folder, to look at what the commands wrote.
trap 'if [[ -n ${SMOKE_KEEP:-} ]]; then echo "smoke: kept $S"; else rm -rf "$S"; fi' EXIT
mkdir "$S/logs" "$S/cwd"

failed=()
passed=0
n=0
problems=()
label=""
out=""
err=""
started=0

# step LABEL WANT_RC COMMAND...: run COMMAND (from an empty folder, so nothing lands in the
# checkout) with stdout to $out and stderr to $err; record what is wrong in `problems`.
step() {
  label=$1
  local want=$2
  shift 2
  n=$((n + 1))
  out="$S/logs/$n.out"
  err="$S/logs/$n.err"
  problems=()
  started=$SECONDS
  local rc=0
  (cd "$S/cwd" && timeout "$TIMEOUT" "$@") >"$out" 2>"$err" </dev/null || rc=$?
  if [[ $rc == 124 ]]; then
    problems+=("timed out after ${TIMEOUT}s")
  elif [[ $rc != "$want" ]]; then
    problems+=("exit code $rc, expected $want")
  fi
  if grep -q "Traceback" "$out" "$err"; then
    problems+=("a Traceback in its output")
  fi
}

need_file() {  # need_file PATH: a non-empty file
  [[ -s $1 ]] || problems+=("${1#"$S/"} was not written")
}

need_dir() {  # need_dir PATH: a non-empty folder
  [[ -d $1 && -n $(ls -A "$1" 2>/dev/null) ]] || problems+=("${1#"$S/"}/ was not written")
}

need_pngs() {  # need_pngs DIR N: at least N PNG files under DIR
  local count
  count=$(find "$1" -name '*.png' -type f 2>/dev/null | wc -l)
  ((count >= $2)) || problems+=("${1#"$S/"}/ holds $count PNG files, expected at least $2")
}

need_json() {  # need_json FILE [PYTHON-EXPRESSION about `doc`]: FILE is JSON (and the test holds)
  local test=${2:-True}
  "$PYTHON" -c "import json, sys; doc = json.load(open(sys.argv[1])); sys.exit(0 if ($test) else 1)" \
    "$1" 2>/dev/null || problems+=("${1#"$S/"} is not JSON${2:+ with $2}")
}

need_output() {  # need_output TEXT: stdout or stderr contains TEXT
  grep -qF -- "$1" "$out" "$err" || problems+=("its output does not say '$1'")
}

verdict() {
  local seconds=$((SECONDS - started))
  if ((${#problems[@]} == 0)); then
    passed=$((passed + 1))
    printf 'PASS  %-76s %4ds\n' "$label" "$seconds"
  else
    failed+=("$label")
    printf 'FAIL  %-76s %4ds\n' "$label" "$seconds"
    local problem
    for problem in "${problems[@]}"; do
      printf '      - %s\n' "$problem"
    done
    echo "      last lines of stderr:"
    tail -n 25 "$err" | sed 's/^/      | /'
    if [[ -s $out ]]; then
      echo "      last lines of stdout:"
      tail -n 10 "$out" | sed 's/^/      | /'
    fi
  fi
}

echo "smoke: $CNNCTL (scratch folder $S)"

step "cnnctl --version" 0 "$CNNCTL" --version
need_output "cnnctl "
verdict

step "cnnctl --help" 0 "$CNNCTL" --help
need_output "Usage"
verdict

for config in "$REPO"/configs/*.yaml; do
  name=configs/$(basename "$config")
  if [[ $name == configs/finetune_from_run.yaml ]]; then
    # it starts from a previous run (its header says how to train it): named, in one line
    step "cnnctl check $name (before its previous run exists)" 2 "$CNNCTL" check "$config"
    need_output "train that run first"
    verdict
    continue
  fi
  # offline too: a pretrained backbone is built with random weights (README: no download)
  step "cnnctl check $name" 0 "$CNNCTL" check "$config"
  need_output "params"
  verdict
done

# One user mistake: a typo'd key is reported (FILE:LINE: ... did you mean) with exit code 2.
sed 's/filters: 32,/filtres: 32,/' "$REPO/configs/quickstart.yaml" >"$S/typo.yaml"
grep -q 'filtres: 32,' "$S/typo.yaml" || echo "smoke: could not put a typo into quickstart.yaml" >&2
step "cnnctl check typo.yaml (a typo'd key: exit code 2)" 2 "$CNNCTL" check "$S/typo.yaml"
need_output "filtres"
verdict

step "cnnctl data check configs/quickstart.yaml" 0 \
  "$CNNCTL" data check "$REPO/configs/quickstart.yaml"
verdict

# The newest run of the README's first command, else one trained here; the commands below work
# on a copy, so eval's files land in the scratch folder too.
newest=$(ls -1td "$REPO"/runs/quickstart/*/ 2>/dev/null | head -n 1)
RUN=$S/run
if [[ -n $newest && -f ${newest}checkpoints/best.keras ]]; then
  echo "smoke: using ${newest#"$REPO/"} (copied to ${RUN#"$S/"})"
  cp -r "$newest" "$RUN"
else
  step "cnnctl train configs/quickstart.yaml --run-dir RUN (no run under runs/quickstart)" 0 \
    "$CNNCTL" train "$REPO/configs/quickstart.yaml" --run-dir "$RUN"
  need_file "$RUN/checkpoints/best.keras"
  verdict
fi

step "cnnctl eval RUN" 0 "$CNNCTL" eval "$RUN"
need_output "accuracy"
verdict

# Three test images of different classes, under one file name in three folders.
cat >"$S/make_images.py" <<'EOF'
import sys
from pathlib import Path

import numpy as np
from PIL import Image

shipped = sorted(Path(sys.argv[1]).glob("*.npz"))  # the quickstart data in the package
data = np.load(shipped[0])
x, y = data["x_test"], data["y_test"]
for folder, label in zip("abc", (0, 1, 9)):
    target = Path(sys.argv[2]) / folder / "0001.png"
    target.parent.mkdir(parents=True)
    Image.fromarray(x[int(np.flatnonzero(y == label)[0])]).save(target)
EOF
step "write a/0001.png b/0001.png c/0001.png from cnnctl/data/*.npz" 0 \
  "$PYTHON" "$S/make_images.py" "$REPO/cnnctl/data" "$S/images"
for folder in a b c; do need_file "$S/images/$folder/0001.png"; done
verdict
IMAGES=("$S/images/a/0001.png" "$S/images/b/0001.png" "$S/images/c/0001.png")

step "cnnctl predict RUN a/0001.png b/0001.png c/0001.png --top-k 3 --plot preds.png" 0 \
  "$CNNCTL" predict "$RUN" "${IMAGES[@]}" --top-k 3 --plot "$S/preds.png"
need_file "$S/preds.png"
verdict

step "cnnctl predict RUN (3 images) --json" 0 "$CNNCTL" predict "$RUN" "${IMAGES[@]}" --json
need_json "$out" "isinstance(doc, list) and len(doc) == 3"
verdict

step "cnnctl explain RUN (3 images) --out explain" 0 \
  "$CNNCTL" explain "$RUN" "${IMAGES[@]}" --out "$S/explain"
need_pngs "$S/explain" 3
verdict

# serve: started in the background on a free port, asked over HTTP, stopped by SIGTERM (exit 0)
cat > "$S/serve_smoke.sh" <<'SERVE'
CNNCTL=$1 RUN=$2 PYTHON=$3 LOG=$4
shift 4
"$CNNCTL" serve "$RUN" --port 0 >"$LOG.out" 2>"$LOG.err" &
pid=$!
url=""
for _ in $(seq 600); do
  url=$(sed -n 's|^serving .* at \(http://[^ ]*\)/$|\1|p' "$LOG.out")
  [[ -n $url ]] || ! kill -0 "$pid" 2>/dev/null && break
  sleep 0.5
done
if [[ -z $url ]]; then cat "$LOG.out" "$LOG.err" >&2; kill "$pid" 2>/dev/null; exit 1; fi
"$PYTHON" - "$url" "$@" <<'ASK'
import json, sys, urllib.request
url, files = sys.argv[1], sys.argv[2:]
health = json.load(urllib.request.urlopen(url + "/healthz", timeout=60))
assert health["status"] == "ok", health
for file in files:
    request = urllib.request.Request(url + "/predict", data=open(file, "rb").read(),
                                     headers={"Content-Type": "image/png"})
    answer = json.load(urllib.request.urlopen(request, timeout=60))
    print(file, answer["predictions"][0]["top"][0])
print(json.load(urllib.request.urlopen(url + "/metadata", timeout=60))["model"])
ASK
asked=$?
kill -TERM "$pid"
wait "$pid"
stopped=$?
cat "$LOG.out"
cat "$LOG.err" >&2
echo "serve exited with $stopped"
((asked == 0 && stopped == 0))
SERVE
step "cnnctl serve RUN --port 0 (healthz, POST /predict of 3 images, metadata, SIGTERM)" 0 \
  bash "$S/serve_smoke.sh" "$CNNCTL" "$RUN" "$PYTHON" "$S/serve" "${IMAGES[@]}"
need_output "quickstart_cnn"
need_output "serve exited with 0"
verdict

step "cnnctl visualize RUN --image a/0001.png --out vis" 0 \
  "$CNNCTL" visualize "$RUN" --image "${IMAGES[0]}" --out "$S/vis"
need_pngs "$S/vis" 2  # the filters and the feature maps (the diagram needs Graphviz)
verdict

step "cnnctl report RUN --out report.html" 0 "$CNNCTL" report "$RUN" --out "$S/report.html"
need_file "$S/report.html"
verdict

step "cnnctl export RUN --format savedmodel --out savedmodel" 0 \
  "$CNNCTL" export "$RUN" --format savedmodel --out "$S/savedmodel"
need_dir "$S/savedmodel"
verdict

step "cnnctl export RUN --format tflite --out model.tflite" 0 \
  "$CNNCTL" export "$RUN" --format tflite --out "$S/model.tflite"
need_file "$S/model.tflite"
verdict

# a search of two one-epoch trials over the quickstart's learning rate, its tune section by --set
TUNE_SECTION="tune={trials: 2, dir: $S/studies, sampler: {name: random, seed: 0}, space: {optimizer.learning_rate: {log_uniform: [1.0e-3, 1.0e-2]}}}"
step "cnnctl tune configs/quickstart.yaml --set tune=... (2 trials of 1 epoch)" 0 \
  "$CNNCTL" tune "$REPO/configs/quickstart.yaml" --set "$TUNE_SECTION" --set train.epochs=1 \
  --set data.max_train_samples=1000 --set train.tensorboard=false
need_file "$S/studies/quickstart/trials.csv"
need_file "$S/studies/quickstart/best.yaml"
need_pngs "$S/studies/quickstart/plots" 1
need_output "2 complete"
verdict

step "cnnctl tune status STUDY" 0 "$CNNCTL" tune status "$S/studies/quickstart"
need_output "best: trial "
verdict

step "cnnctl report STUDY" 0 "$CNNCTL" report "$S/studies/quickstart"
need_file "$S/studies/quickstart/report.html"
verdict

step "cnnctl runs SCRATCH (the run just used)" 0 "$CNNCTL" runs "$S"
need_output "finished"
verdict

step "cnnctl schema > schema.json" 0 "$CNNCTL" schema
cp "$out" "$S/schema.json"
need_json "$S/schema.json" "isinstance(doc, dict) and 'properties' in doc"
verdict

echo
if ((${#failed[@]} == 0)); then
  echo "smoke: all $passed commands passed"
  exit 0
fi
echo "smoke: ${#failed[@]} of $((passed + ${#failed[@]})) commands FAILED:"
printf '  %s\n' "${failed[@]}"
exit 1
