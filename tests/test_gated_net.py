"""Issue 18 item 5: the seed claim on a trained gated net. ``synthetic-senet`` (squeeze-excitation after every stage,
SiLU activations) is trained on the synthetic scenes and cached; on collages of two test scenes of different classes
(one scene per half), Relevance-CAM at every ``layer="stages"`` layer puts ≥ 0.5 of its energy (energy-based
pointing game of the min–max heatmap) on the half that holds the explained class's object, for both classes, as
tests/test_layers.py checks for EfficientNet-Lite0 on a photo collage."""
from __future__ import annotations

import pytest
import torch

import cnnlens
from cnnlens.data.synthetic import SHAPES, _normalise, render_scene, synthetic_model
from cnnlens.metrics.localization import energy_pointing_game

N_PAIRS = 8


def two_scene_collages(n_pairs: int = N_PAIRS, size: int = 64, first: int = 200):
    """(x (2n,3,size,2·size), targets (2n,), masks (2n,size,2·size)): each collage twice, explained once for the left
    scene's class (mask: left half) and once for the right one's (right half); consecutive test scenes with different
    labels are paired."""
    xs, targets, masks = [], [], []
    i = first
    while len(xs) < 2 * n_pairs:
        (a, _, la), (b, _, lb) = render_scene(i, size=size), render_scene(i + 1, size=size)
        i += 2
        if la == lb:
            continue
        image = torch.cat([_normalise(a), _normalise(b)], dim=2)
        for side, label in ((0, la), (1, lb)):
            m = torch.zeros(size, 2 * size, dtype=torch.bool)
            m[:, side * size:(side + 1) * size] = True
            xs.append(image)
            targets.append(label)
            masks.append(m)
    return torch.stack(xs), torch.tensor(targets), torch.stack(masks)


def test_senet_is_registered_and_gated(tmp_path):
    """The untrained architecture: SE products of SiLU activations are post-activation stage layers."""
    model = synthetic_model("senet", cache=tmp_path, n_train=20, epochs=1, size=32)
    assert model.cnnlens_meta.name == "synthetic-senet"
    stages = cnnlens.stage_layers(model)
    report = {la.name: la for la in cnnlens.explainable_layers(model)}
    assert stages == ["stage1", "stage2", "stage3", "stage4"]
    assert all(report[s].activation == "activation" for s in stages)
    assert type(dict(model.named_modules())["stage1.se"]).__name__ == "SqueezeExcitation"
    assert isinstance(dict(model.named_modules())["stage1.act1"], torch.nn.SiLU)


@pytest.mark.slow
def test_relevance_cam_points_at_the_explained_object_on_a_gated_net():
    model = synthetic_model("senet")          # trained once (≈ 1–3 min on 2 CPU cores), then cached
    x, targets, masks = two_scene_collages()
    with torch.no_grad():
        probs = model(x).softmax(1)
    # both objects are seen: each collage's two classes are its two most probable ones
    top2 = probs.topk(2, dim=1).indices
    assert bool((top2 == targets[:, None]).any(1).all()), "a collage's class is not among its top-2"
    stages = cnnlens.stage_layers(model)
    maps = cnnlens.explain(model, x, "relevance-cam", target=targets, layer="stages")
    assert list(maps) == stages and len(stages) == 4
    for name, e in maps.items():
        energy = energy_pointing_game(e.heatmap, masks)
        for c in targets.unique().tolist():
            share = float(energy[targets == c].mean())
            assert share >= 0.5, (name, SHAPES[c], share, energy.tolist())
        left, right = energy[0::2].mean(), energy[1::2].mean()
        assert min(float(left), float(right)) >= 0.5, (name, float(left), float(right))
