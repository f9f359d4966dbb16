"""Worst agreement of cnnlens SISE with the reference fixtures (shared/fixtures/sise), per quantity, against the
tolerances of the fixtures' README. Run: ``python benchmarks/sise_fixture_agreement.py`` (set CNNLENS_SHARED_DIR
when shared/ is not beside the repository). The same checks are asserted in tests/test_sise.py."""
import sys
import warnings
from pathlib import Path

root = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(root / "src"), str(root / "tests")]
from test_sise import *  # noqa: E402,F403  (fixtures loader, toy net, TAPS, CASES)
from test_sise import _acts  # noqa: E402
warnings.simplefilter("ignore")
if not FIXTURES.exists():
    sys.exit(f"fixtures not found at {FIXTURES}")
worst = {}
def upd(k, v, tol):
    worst[k] = (max(worst.get(k, (0, tol))[0], float(v)), tol)
for case in CASES:
    d, model, x = load_case(case)
    with torch.no_grad():
        upd("probs", np.abs(model(x).softmax(-1)[0].numpy() - d["probs"]).max(), "1e-6")
    e = run_case(d, model, x, mode="reference")
    acts = _acts(model, x)
    for l, tap in enumerate(TAPS):
        ra = d[f"layer{l}_alpha"]
        upd("alpha / max|alpha|", np.abs(e.extras["alpha"][tap][0].numpy() - ra).max() / np.abs(ra).max(), "1e-4")
        if f"layer{l}_act" in d: upd("act", np.abs(acts[tap][0].numpy() - d[f"layer{l}_act"]).max(), "1e-5")
        kept = e.extras["selected"][tap][0].nonzero()[:, 0].tolist()
        assert kept == d[f"layer{l}_kept"].tolist()
        if not kept: continue
        flat = d[f"layer{l}_flat"]
        upd("scores", np.abs(e.extras["scores"][tap].numpy() - d[f"layer{l}_scores"][~flat]).max(), "1e-6")
        if f"layer{l}_masks" in d:
            upd("masks", np.abs(attribution_masks(acts[tap][0][torch.tensor(kept)], x.shape[-2:]).numpy() - d[f"layer{l}_masks"]).max(), "1e-5")
        rr = d[f"layer{l}_map_raw"]
        upd("map_raw / max", np.abs(e.extras["layer_maps_raw"][tap][0].numpy() - rr).max() / np.abs(rr).max(), "1e-5")
        upd("map", np.abs(e.extras["layer_maps"][tap][0].numpy() - d[f"layer{l}_map"]).max(), "1e-5")
        t, tb = otsu_threshold(e.extras["layer_maps"][tap], tau=1.5)
        assert tb.item() == int(d[f"layer{l}_otsu_bin"]) and t.item() == float(d[f"layer{l}_otsu_thr"])
    upd("fused (soft)", np.abs(e.raw[0].numpy() - d["fused"]).max(), "1e-4")
    upd("explanation", np.abs(e.heatmap[0].numpy() - d["explanation"]).max(), "1e-4")
    for fusion, tau, key in [("otsu_hard", 1.5, "fused_hard"), ("otsu_hard", 1.0, "fused_hard_plain"), ("simple", 1.0, "fused_simple")]:
        f = run_case(d, model, x, fusion=fusion, tau=tau)
        upd(key, np.abs(f.raw[0].numpy() - d[key]).max(), "1e-5")
print("kept/flat sets, Otsu bins, tau decisions, thresholds: identical in all cases")
for k, (v, tol) in worst.items():
    print(f"  {k:22s} max|Δ| {v:.2e}   (tolerance {tol})")
