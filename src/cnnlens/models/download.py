"""Downloads into the caches torchvision and timm use, once, with a progress bar; offline afterwards.

* torch hub cache: ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``, default
  ``~/.cache/torch/hub/checkpoints``) under the URL's file name, as ``torch.hub.load_state_dict_from_url`` stores it
  (torchvision's weights, timm's URL weights and ``weights="https://..."``);
* Hugging Face cache: ``huggingface_hub.constants.HF_HUB_CACHE`` (``$HF_HOME/hub``) for timm's hub weights, managed
  by huggingface_hub itself (``HF_HUB_OFFLINE=1`` reads it without the network).

``CNNLENS_OFFLINE=1`` forbids cnnlens's own downloads (the torch hub cache is then read only). Every failure is a
:class:`~cnnlens.errors.WeightsError` saying what was tried, where the cache is, and the two ways out.
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

from ..errors import WeightsError
from .weights_spec import HASH_IN_NAME

OFFLINE_ENV = "CNNLENS_OFFLINE"


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def torch_hub_checkpoints() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (read at each call, as torch.hub does)."""
    import torch.hub
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_hub_cache() -> str:
    """The Hugging Face hub cache (``$HF_HOME/hub``; huggingface_hub reads it when first imported)."""
    try:
        from huggingface_hub import constants
        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - timm depends on huggingface_hub
        home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
        return os.environ.get("HF_HUB_CACHE", os.path.join(home, "hub"))


def ways_out(what: str) -> str:
    return (f"Connect to the internet once (the file is then cached and used offline; `cnnlens fetch-weights "
            f"{what}` pre-fetches it), or pass weights=PATH to a local state-dict file (CLI: --weights PATH)")


def url_file_name(url: str) -> str:
    return os.path.basename(urlparse(url).path.rstrip("/"))


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def cached_download(url: str, *, what: str, name: str, sha256: str | None = None, progress: bool = True) -> Path:
    """The cached copy of ``url`` in the torch hub cache, downloaded first when absent (torch.hub's file name and,
    as torch.hub's ``check_hash``, a hash prefix in the file name checked on download; a ``sha256`` given is checked
    on download and on every later use). ``what`` describes the weights for messages, ``name`` is what
    ``cnnlens fetch-weights`` would be given."""
    folder = torch_hub_checkpoints()
    path = folder / url_file_name(url)
    if path.is_file():
        if sha256 is not None:
            got = sha256_of(path)
            if not got.startswith(sha256):
                raise WeightsError(f"the cached file {path} ({what}) has sha256 {got}, expected {sha256}: delete it "
                                   f"to download it again, or check the hash")
        return path
    if offline():
        raise WeightsError(f"{what}: not in the torch hub cache ({path}) and {OFFLINE_ENV} is set, so nothing is "
                           f"downloaded. {ways_out(name)}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"{what}: cannot create the torch hub cache {folder} ({exc.strerror or exc}). "
                           f"Set TORCH_HOME to a writable folder, or pass weights=PATH") from None
    match = HASH_IN_NAME.search(path.name)
    checks = [(e, source) for e, source in ((match.group(1) if match else None, "the hash in its file name"),
                                            (sha256, "the sha256 given")) if e is not None]

    def check(digest: str) -> None:
        for expected, source in checks:
            if not digest.startswith(expected):
                raise WeightsError(f"the file downloaded from {url} has sha256 {digest}, which does not match "
                                   f"{source} ({expected}): refused, not kept in the cache")
    try:
        _download(url, path, progress, check)
    except (OSError, ValueError) as exc:          # URLError, HTTPError, timeouts, refused connections
        if isinstance(exc, WeightsError):
            raise
        raise WeightsError(f"{what}: cannot download {url} ({first_line(exc)}); not in the cache {path}. "
                           f"{ways_out(name)}") from None
    return path


def _download(url: str, path: Path, progress: bool, check) -> None:
    """Stream ``url`` into a temporary file next to ``path`` (sha256 on the way, a tqdm bar named after the file on
    stderr once the server answers), ``check(sha256)``, then move it into place. A failed, refused or interrupted
    download leaves nothing in the cache."""
    import tempfile
    import urllib.request

    from tqdm.auto import tqdm
    request = urllib.request.Request(url, headers={"User-Agent": "cnnlens"})
    h = hashlib.sha256()
    with urllib.request.urlopen(request, timeout=60) as response:
        total = response.headers.get("Content-Length")
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".partial", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out, tqdm(total=int(total) if total and total.isdigit() else None,
                                                   disable=not progress, unit="B", unit_scale=True,
                                                   unit_divisor=1024, desc=f"downloading {path.name}",
                                                   file=sys.stderr) as bar:
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    h.update(block)
                    bar.update(len(block))
            check(h.hexdigest())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "reason", None) or exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
