#!/usr/bin/env bash
# The README's "Sanity checks" table: cascading model-parameter randomisation on EfficientNet-Lite0 (real ImageNet
# weights) with the bundled photos, along the default cascade (9 steps: head; blocks.6 … blocks.0; stem).
# Three runs on five photos (CAMs; the LRP-based methods; LRP with every composite), split so that each finishes on
# its own (on a shared 2-core CPU: 2.7, 5.8 and 8.7 min). SISE / Score-CAM / RISE cost 30–65 s per map there, so
# they run on chelsea only: Score-CAM along the default cascade, SISE and RISE (250 masks) in two steps (head, then
# everything below). Usage: bash benchmarks/sanity_efficientnet.sh [OUT_DIR]; then
#   python benchmarks/sanity_table.py OUT_DIR/{cams,lrpmethods,composites,score-cam,costly}/sanity.json
set -euo pipefail
OUT=${1:-sanity-efficientnet}
PHOTOS="chelsea coffee astronaut rocket motorcycle_left"
COMPOSITES="epsilon-plus epsilon-plus-flat epsilon-gamma-box epsilon-alpha2-beta1 epsilon-alpha2-beta1-flat dtd \
sglrp-reference clrp-reference relevance-cam-reference sr-reference"
LRP=$(for c in $COMPOSITES; do printf 'lrp@%s,' "$c"; done)
cnnlens sanity $PHOTOS --model efficientnet_lite0 --quiet \
    --methods grad-cam,grad-cam++,xgrad-cam,layer-cam,relevance-cam --out "$OUT/cams"
cnnlens sanity $PHOTOS --model efficientnet_lite0 --quiet \
    --methods sglrp,clrp,deep-taylor,sr-map --option sr-map:working_size=128 --out "$OUT/lrpmethods"
cnnlens sanity $PHOTOS --model efficientnet_lite0 --quiet --methods "${LRP%,}" --out "$OUT/composites"
cnnlens sanity chelsea --model efficientnet_lite0 --quiet --methods score-cam --out "$OUT/score-cam"
cnnlens sanity chelsea --model efficientnet_lite0 --blocks "conv_stem+bn1+blocks,conv_head+bn2+classifier" --quiet \
    --methods sise,rise --option rise:n_masks=250 --out "$OUT/costly"
