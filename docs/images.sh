#!/usr/bin/env bash
# Regenerate the README's pictures from the quickstart, with the installed cnnctl:
#   bash docs/images.sh            (about a minute on 2 CPU cores; needs chromium for report.png)
set -euo pipefail
cd "$(dirname "$0")/.."
CNNCTL=${CNNCTL:-.venv/bin/cnnctl}
PYTHON=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$CNNCTL" train configs/quickstart.yaml --run-dir "$work/run" > /dev/null
# test image 0 of the shipped set (an ankle boot), as a PNG file
"$PYTHON" - "$work/boot.png" <<'PY'
import sys
import numpy as np
from PIL import Image
from importlib.resources import files
data = np.load(files("cnnctl") / "data" / "fashion_mnist_small.npz")
Image.fromarray(data["x_test"][0]).save(sys.argv[1])
PY
"$CNNCTL" explain "$work/run" "$work/boot.png" --out "$work/explain" > /dev/null
"$CNNCTL" visualize "$work/run" --image "$work/boot.png" --out "$work/visualize" > /dev/null
"$CNNCTL" report "$work/run" > /dev/null
cp "$work/run/curves.png" docs/images/curves.png
cp "$work"/explain/boot.gradcam-*.png docs/images/explain_gradcam.png
cp "$work/visualize/filters.png" docs/images/filters.png
cp "$work"/visualize/featuremaps_conv2d.png docs/images/featuremaps.png
[ -f "$work/visualize/model.png" ] && cp "$work/visualize/model.png" docs/images/model.png
if command -v chromium > /dev/null; then
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1100,1400 \
        --user-data-dir="$work/profile" --screenshot="$work/report.png" \
        "file://$work/run/report.html" 2> /dev/null
    cp "$work/report.png" docs/images/report.png
else
    echo "chromium not installed: docs/images/report.png left as it was" >&2
fi
command -v chromedriver > /dev/null && "$PYTHON" docs/serve_page.py --cnnctl "$CNNCTL" "$work/run" docs/images/serve_page.png
echo "written: docs/images/{curves,explain_gradcam,filters,featuremaps,model,report,serve_page}.png"
