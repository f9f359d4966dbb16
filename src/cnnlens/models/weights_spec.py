"""What a ``weights=`` value (``--weights``) asks for, parsed without torch so the CLI checks it before loading
anything.

* ``None``: the model's own pretrained weights (bundled EfficientNet-Lite, torchvision's ``DEFAULT``, timm's
  pretrained tag);
* ``"random"``: a random initialisation (the only way to get one; for the sanity checks' randomised models);
* ``"IMAGENET1K_V1"``, ``"DEFAULT"``, ``"ResNet50_Weights.IMAGENET1K_V2"``: a member of the torchvision
  architecture's weights enum;
* ``"http(s)://..."``: a state dict downloaded once into the torch hub cache (``$TORCH_HOME/hub/checkpoints``);
  ``#sha256=HEX`` at the end (the full hash or a prefix of at least 8 hex digits) checks the file, and so does a
  torch.hub-style hash prefix in the file name (``name-<8+ hex digits>.pth``) on download;
* anything else: a local state-dict file (``weights_only=True``); an existing file always wins over the other
  readings (``./random`` for a file called ``random``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

RANDOM = "random"
#: a member of a torchvision weights enum, optionally qualified by the enum's name
_ENUM = re.compile(r"^(?:(?P<enum>[A-Za-z0-9_]+_Weights)\.)?(?P<member>[A-Z][A-Z0-9_]*)$")
_SHA256 = re.compile(r"^[0-9a-f]{8,64}$")
#: torch.hub's hash-prefixed file names (``resnet18-f37072fd.pth``), at least 8 hex digits here
HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")


@dataclass(frozen=True)
class WeightsSpec:
    """kind: ``default`` | ``random`` | ``enum`` | ``url`` | ``file``; value: the enum member, the URL (without
    its ``#sha256=`` fragment) or the path; enum: the enum's class name when qualified; sha256: the expected hash
    (or prefix) of a URL's file."""
    kind: str
    value: str | None = None
    enum: str | None = None
    sha256: str | None = None


def parse_weights(weights) -> WeightsSpec:
    """``weights=`` / ``--weights`` → :class:`WeightsSpec` (no I/O beyond a file-existence check, no torch)."""
    from ..errors import WeightsError
    if weights is None:
        return WeightsSpec("default")
    if isinstance(weights, os.PathLike):
        return WeightsSpec("file", os.fspath(weights))
    if not isinstance(weights, str) or not weights.strip():
        raise WeightsError(f"weights must be None, 'random', a torchvision weights name, an http(s) URL or a "
                           f"file path, got {weights!r}")
    text = weights.strip()
    if os.path.isfile(text):
        return WeightsSpec("file", text)
    if text == RANDOM:
        return WeightsSpec("random")
    if text.lower().startswith(("http://", "https://")):
        url, _, fragment = text.partition("#")
        sha = None
        if fragment:
            key, _, value = fragment.partition("=")
            if key != "sha256" or not _SHA256.match(value.lower()):
                raise WeightsError(f"weights URL {text!r}: the only fragment understood is #sha256=HEX (the file's "
                                   f"sha256, or a prefix of at least 8 hex digits)")
            sha = value.lower()
        if not os.path.basename(url.split("?", 1)[0].rstrip("/")):
            raise WeightsError(f"weights URL {url!r} does not end in a file name")
        return WeightsSpec("url", url, sha256=sha)
    match = _ENUM.match(text)
    if match:
        return WeightsSpec("enum", match.group("member"), enum=match.group("enum"))
    return WeightsSpec("file", text)


def check_weights(weights) -> None:
    """The torch-free part of the check (the CLI runs it before importing torch): a path that names no file."""
    from ..errors import WeightsError
    spec = parse_weights(weights)
    if spec.kind == "file":
        if os.path.isdir(spec.value):
            raise WeightsError(f"weights path is a directory, not a file: {spec.value}")
        if not os.path.exists(spec.value):
            raise WeightsError(f"weights file not found: {spec.value} (weights are a file, an http(s) URL, "
                               f"'random' or a torchvision weights name such as IMAGENET1K_V1)")
