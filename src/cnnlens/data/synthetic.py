"""Synthetic scenes with known boxes, and small CNNs trained on them (a VGG-like, a ResNet-like and a gated
SENet-like net with SiLU activations and squeeze-excitation).

A scene: smooth colour clutter with blobs, one large textured shape (the label) and a smaller distractor shape of another
class. Each class has its own shape and texture (disc/horizontal stripes, square/vertical stripes, triangle/checker,
cross/diagonal stripes, ...); colours are random. Scene ``i`` of a split is a pure function of (seed, split, i).
The nets are torchvision ``VGG`` / ``ResNet`` instances with small widths (so layer names match: ``features.N``,
``layer1``–``layer4``) and :class:`SENetLike` (``stem``, ``stage1``–``stage4``), trained on CPU in well under a minute
(VGG, ResNet) or one to three minutes (SENet) each and cached (``$CNNLENS_CACHE`` or ``~/.cache/cnnlens``; ``torch.save`` of the state dict, read back with ``torch.load(..., weights_only=True)``).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, ModelError
from .sample import Sample

SHAPES = ("disc", "square", "triangle", "cross", "diamond", "ring")
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
_SPLITS = {"train": 0, "test": 1}
CACHE_VERSION = 3


@dataclass(frozen=True)
class SyntheticMeta:
    """What cnnlens needs to feed the synthetic nets (same attribute names as the model zoo's metadata)."""
    name: str
    class_names: tuple[str, ...]
    mean: tuple[float, ...] = MEAN
    std: tuple[float, ...] = STD
    input_size: tuple[int, int, int] = (3, 64, 64)


def _shape_mask(cls: int, cy: float, cx: float, r: float, yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    dy, dx = yy - cy, xx - cx
    kind = SHAPES[cls]
    if kind == "disc":
        return dy ** 2 + dx ** 2 <= r ** 2
    if kind == "square":
        return (dy.abs() <= 0.85 * r) & (dx.abs() <= 0.85 * r)
    if kind == "triangle":
        return (dy >= -r) & (dy <= 0.8 * r) & (dx.abs() <= 0.62 * (dy + r))
    if kind == "cross":
        return ((dx.abs() <= 0.36 * r) & (dy.abs() <= r)) | ((dy.abs() <= 0.36 * r) & (dx.abs() <= r))
    if kind == "diamond":
        return dy.abs() + dx.abs() <= r
    return (dy ** 2 + dx ** 2 <= r ** 2) & (dy ** 2 + dx ** 2 >= (0.55 * r) ** 2)      # ring


def _texture(cls: int, yy: torch.Tensor, xx: torch.Tensor, period: float, phase: float) -> torch.Tensor:
    w = 2 * math.pi / period
    kind = cls % 4
    if kind == 0:
        return torch.sin(w * yy + phase) > 0
    if kind == 1:
        return torch.sin(w * xx + phase) > 0
    if kind == 2:
        return (torch.floor((yy + phase) / (period / 2)) + torch.floor((xx + phase) / (period / 2))) % 2 == 0
    return torch.sin(w * (yy + xx) / math.sqrt(2) + phase) > 0


class single_thread:
    """Run a block with one intra-op thread: small tensors gain nothing from threads, and on a shared machine
    thread contention makes them many times slower."""

    def __enter__(self):
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.n)


def _rand(g: torch.Generator, lo: float = 0.0, hi: float = 1.0, shape=()) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def render_scene(index: int, *, size: int = 64, num_classes: int = 4, seed: int = 0, split: str = "test"
                 ) -> tuple[torch.Tensor, list[tuple[int, float, float, float, float]], int]:
    """(rgb (3,size,size) in [0,1], boxes [(class, x1, y1, x2, y2)] main first, label) of scene ``index``."""
    if not 2 <= num_classes <= len(SHAPES):
        raise InputError(f"num_classes must be between 2 and {len(SHAPES)}, got {num_classes}")
    g = torch.Generator().manual_seed(((seed * 7919 + _SPLITS[split]) * 1_000_003 + index) % (2 ** 63))
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    low = _rand(g, 0.25, 0.75, (1, 3, 6, 6))
    img = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)[0]
    for _ in range(int(_rand(g, 4, 9))):                                          # clutter blobs
        cy, cx = _rand(g, 0, size), _rand(g, 0, size)
        sig = _rand(g, 0.02, 0.06) * size
        blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sig ** 2))
        img = img * (1 - 0.7 * blob) + 0.7 * blob * _rand(g, 0, 1, (3, 1, 1))
    label = int(torch.randint(num_classes, (1,), generator=g))
    other = int(torch.randint(num_classes - 1, (1,), generator=g))
    other = other + (other >= label)
    boxes = []
    placed: list[tuple[float, float, float]] = []
    for cls, (rlo, rhi) in ((label, (0.16, 0.22)), (other, (0.08, 0.11))):
        r = float(_rand(g, rlo, rhi)) * size
        for _ in range(100):
            cy = float(_rand(g, r + 1, size - r - 1))
            cx = float(_rand(g, r + 1, size - r - 1))
            if all(max(abs(cy - py), abs(cx - px)) > r + pr + 2 for py, px, pr in placed):
                break
        placed.append((cy, cx, r))
        mask = _shape_mask(cls, cy, cx, r, yy, xx)
        tex = _texture(cls, yy, xx, float(_rand(g, 0.22, 0.32)) * r * 2 / 2, float(_rand(g, 0, 2 * math.pi)))
        colour = _rand(g, 0.55, 1.0, (3, 1, 1))
        colour[int(torch.randint(3, (1,), generator=g))] *= 0.3
        obj = torch.where(tex, colour, colour * 0.35)
        img = torch.where(mask, obj, img)
        rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
        boxes.append((cls, float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)))
    img = (img + 0.03 * torch.randn((3, size, size), generator=g)).clamp(0, 1)
    return img, boxes, label


def _normalise(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - torch.tensor(MEAN).view(-1, 1, 1)) / torch.tensor(STD).view(-1, 1, 1)


class SyntheticScenes:
    """``n`` synthetic scenes of a split (default the test split; the nets train on "train")."""

    def __init__(self, n: int = 200, *, size: int = 64, num_classes: int = 4, seed: int = 0, split: str = "test"):
        if n < 1:
            raise InputError(f"empty dataset: n must be at least 1, got {n}")
        if split not in _SPLITS:
            raise InputError(f"split must be one of {tuple(_SPLITS)}, got {split!r}")
        self.n, self.size, self.num_classes, self.seed, self.split = n, size, num_classes, seed, split
        self.class_names = list(SHAPES[:num_classes])
        self.name = "synthetic"

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < self.n:
            raise IndexError(i)
        with single_thread():
            rgb, boxes, label = render_scene(i, size=self.size, num_classes=self.num_classes, seed=self.seed,
                                             split=self.split)
        return Sample(f"{self.split}-{i:05d}", _normalise(rgb), (self.size, self.size), boxes, [label])

    def batch(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised images (B,3,S,S), labels (B,)) of scenes start..stop-1 (for training)."""
        xs, ys = [], []
        with single_thread():
            for i in range(start, stop):
                rgb, _, label = render_scene(i, size=self.size, num_classes=self.num_classes, seed=self.seed,
                                             split=self.split)
                xs.append(_normalise(rgb))
                ys.append(label)
        return torch.stack(xs), torch.tensor(ys)

    def describe(self) -> dict:
        return {"name": self.name, "n": self.n, "size": self.size, "num_classes": self.num_classes,
                "seed": self.seed, "split": self.split}


# ---------------------------------------------------------------------------------------------------- models
def vgg_like(num_classes: int = 4, widths: tuple[int, ...] = (8, 32, 64)) -> nn.Module:
    """torchvision ``VGG`` with [w, w, M] blocks, global average pooling and one linear layer."""
    from torchvision.models.vgg import VGG, make_layers
    cfg: list = []
    for w in widths:
        cfg += [w, w, "M"]
    model = VGG(make_layers(cfg, batch_norm=False), num_classes=num_classes, init_weights=True)
    model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    model.classifier = nn.Sequential(nn.Linear(widths[-1], num_classes))
    return model


def resnet_like(num_classes: int = 4, widths: tuple[int, int, int, int] = (16, 32, 64, 128)) -> nn.Module:
    """torchvision ``ResNet`` with one ``BasicBlock`` per stage at small widths, 3×3 stem (stride 1) + max pooling."""
    from torchvision.models.resnet import BasicBlock, ResNet
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
    model.bn1 = nn.BatchNorm2d(widths[0])
    stages, inplanes = [], widths[0]
    for i, w in enumerate(widths):
        stride = 1 if i == 0 else 2
        down = None
        if stride != 1 or inplanes != w:
            down = nn.Sequential(nn.Conv2d(inplanes, w, 1, stride, bias=False), nn.BatchNorm2d(w))
        stages.append(nn.Sequential(BasicBlock(inplanes, w, stride, down)))
        inplanes = w
    model.layer1, model.layer2, model.layer3, model.layer4 = stages
    model.fc = nn.Linear(widths[-1], num_classes)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model


class SEBlock(nn.Module):
    """conv 3×3 → BN → SiLU → conv 3×3 → BN → SiLU → squeeze-excitation (torchvision's ``SqueezeExcitation``:
    the output times σ(fc₂(SiLU(fc₁(avgpool)))), Hu et al. 2018)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        from torchvision.ops import SqueezeExcitation
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = nn.SiLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = nn.SiLU()
        self.se = SqueezeExcitation(cout, max(4, cout // 4), activation=nn.SiLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))))


class SENetLike(nn.Module):
    """A small gated net: a 3×3 stem (BN, SiLU) and four :class:`SEBlock` stages (``stage1``–``stage4``, strides
    1, 2, 2, 2), global average pooling and one linear layer. Every stage output is a squeeze-excitation product of
    SiLU activations: the gated, smooth-activation case of issue 18 on a net that is actually trained."""

    def __init__(self, num_classes: int = 4, widths: tuple[int, int, int, int] = (16, 32, 48, 64)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.SiLU())
        cin = widths[0]
        for i, w in enumerate(widths):
            setattr(self, f"stage{i + 1}", SEBlock(cin, w, 1 if i == 0 else 2))
            cin = w
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage4(self.stage3(self.stage2(self.stage1(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


def senet_like(num_classes: int = 4) -> nn.Module:
    """:class:`SENetLike` at its default widths."""
    return SENetLike(num_classes)


ARCHS = {"vgg": vgg_like, "resnet": resnet_like, "senet": senet_like}


def cache_dir() -> Path:
    return Path(os.environ.get("CNNLENS_CACHE") or Path.home() / ".cache" / "cnnlens")


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "vgg"
    size: int = 64
    num_classes: int = 4
    seed: int = 0
    n_train: int = 2000
    epochs: int = 4
    batch_size: int = 50
    lr: float = 3e-3
    #: None: the true labels. An int: train on the labels randomly permuted across the training scenes with this seed
    #: (the data-randomisation twin of Adebayo et al. 2018, §3.2).
    label_permutation_seed: int | None = None

    @property
    def key(self) -> str:
        permuted = "" if self.label_permutation_seed is None else f"-permuted{self.label_permutation_seed}"
        return (f"synthetic-{self.arch}-{self.size}px-k{self.num_classes}-seed{self.seed}-n{self.n_train}"
                f"-e{self.epochs}-b{self.batch_size}-lr{self.lr:g}{permuted}-v{CACHE_VERSION}")


def train_synthetic(cfg: TrainConfig, progress: bool = False) -> tuple[nn.Module, dict]:
    """Train ``cfg.arch`` on ``cfg.n_train`` training scenes (Adam, one-cycle schedule; fresh scenes need no augmentation),
    single-threaded (deterministic, and fastest on a shared CPU); return (model, report with test accuracy)."""
    with single_thread():
        return _train(cfg, progress)


def _train(cfg: TrainConfig, progress: bool) -> tuple[nn.Module, dict]:
    if cfg.arch not in ARCHS:
        raise ModelError(f"unknown synthetic architecture {cfg.arch!r}; choose from {sorted(ARCHS)}")
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = ARCHS[cfg.arch](cfg.num_classes)
    data = SyntheticScenes(cfg.n_train, size=cfg.size, num_classes=cfg.num_classes, seed=cfg.seed, split="train")
    x, y = data.batch(0, cfg.n_train)
    if cfg.label_permutation_seed is not None:
        y = y[torch.randperm(cfg.n_train, generator=torch.Generator().manual_seed(cfg.label_permutation_seed))]
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps = cfg.epochs * math.ceil(cfg.n_train / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(steps, 1), pct_start=0.15)
    model.train()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=steps, desc=f"training synthetic-{cfg.arch}", unit="step")
    for _ in range(cfg.epochs):
        perm = torch.randperm(cfg.n_train, generator=g)
        for i in range(0, cfg.n_train, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
    if bar is not None:
        bar.close()
    model.eval()
    test = SyntheticScenes(500, size=cfg.size, num_classes=cfg.num_classes, seed=cfg.seed, split="test")
    xt, yt = test.batch(0, 500)
    with torch.inference_mode():
        acc = float((model(xt).argmax(1) == yt).float().mean())
        n_fit = min(cfg.n_train, 500)
        fit = float((model(x[:n_fit]).argmax(1) == y[:n_fit]).float().mean())
    return model, {"config": cfg.__dict__, "test_accuracy": acc, "train_accuracy": fit,
                   "train_seconds": time.perf_counter() - t0}


def _attach_meta(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    suffix = "" if cfg.label_permutation_seed is None else "-random-labels"
    model.cnnlens_meta = SyntheticMeta(f"synthetic-{cfg.arch}{suffix}", tuple(SHAPES[:cfg.num_classes]),
                                       input_size=(3, cfg.size, cfg.size))
    return model.eval()


def synthetic_model(arch: str = "vgg", *, cache: str | Path | None = None, retrain: bool = False,
                    progress: bool = False, **config) -> nn.Module:
    """The trained synthetic net ``arch`` ("vgg", "resnet" or "senet"), from the cache or trained now (then cached).
    ``config`` overrides :class:`TrainConfig` fields (size, num_classes, seed, n_train, epochs, ...);
    ``label_permutation_seed=0`` gives the twin trained on permuted labels (cached under its own key)."""
    cfg = TrainConfig(arch=arch, **config)
    if arch not in ARCHS:
        raise ModelError(f"unknown synthetic architecture {arch!r}; choose from {sorted(ARCHS)}")
    folder = Path(cache) if cache is not None else cache_dir()
    path = folder / "synthetic" / f"{cfg.key}.pt"
    if path.is_file() and not retrain:
        model = ARCHS[arch](cfg.num_classes)
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:  # a truncated or foreign file: retrain rather than fail
            import warnings
            warnings.warn(f"ignoring unreadable cached weights {path}: {exc}", RuntimeWarning, stacklevel=2)
        else:
            return _attach_meta(model, cfg)
    model, report = train_synthetic(cfg, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    tmp_json = path.with_suffix(f".json.tmp{os.getpid()}")
    tmp_json.write_text(json.dumps(report, indent=2))
    os.replace(tmp_json, path.with_suffix(".json"))
    return _attach_meta(model, cfg)
