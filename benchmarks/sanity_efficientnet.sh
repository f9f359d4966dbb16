#!/usr/bin/env bash
# The README's "Sanity checks" table: cascading model-parameter randomisation on EfficientNet-Lite0 (real ImageNet
# weights) with the bundled photos, along a 4-step cascade (head; blocks.6+5; blocks.4+3; blocks.2-0 and the stem).
# Two runs: every method except SISE / Score-CAM / RISE, and LRP with every composite, on five photos; the
# costly ones on chelsea only (on a shared 2-core CPU: SISE ≈ 55 s, Score-CAM at bn2 ≈ 30 s, RISE ≈ 0.26 s per mask,
# per map). Usage: bash benchmarks/sanity_efficientnet.sh [OUT_DIR]; then
#   python benchmarks/sanity_table.py OUT_DIR/cheap/sanity.json OUT_DIR/costly/sanity.json
set -euo pipefail
OUT=${1:-sanity-efficientnet}
BLOCKS="conv_stem+bn1+blocks.0+blocks.1+blocks.2,blocks.3+blocks.4,blocks.5+blocks.6,conv_head+bn2+classifier"
COMPOSITES="epsilon-plus epsilon-plus-flat epsilon-gamma-box epsilon-alpha2-beta1 epsilon-alpha2-beta1-flat dtd \
sglrp-reference clrp-reference relevance-cam-reference sr-reference"
LRP=$(for c in $COMPOSITES; do printf 'lrp@%s,' "$c"; done)
cnnlens sanity chelsea coffee astronaut rocket motorcycle_left --model efficientnet_lite0 --blocks "$BLOCKS" --quiet \
    --methods "grad-cam,grad-cam++,xgrad-cam,layer-cam,relevance-cam,sglrp,clrp,deep-taylor,sr-map,${LRP%,}" \
    --option sr-map:working_size=128 --out "$OUT/cheap"
cnnlens sanity chelsea --model efficientnet_lite0 --blocks "conv_stem+bn1+blocks,conv_head+bn2+classifier" --quiet \
    --methods sise,score-cam,rise \
    --option rise:n_masks=250 --out "$OUT/costly"
