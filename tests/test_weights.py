"""ImageNet weight files: published URLs read from the libraries, downloads checked by their hash,
and a machine without network told in one line what to fetch and where to put it (no download here)."""

from __future__ import annotations

import hashlib
import io
import urllib.error

import pytest

from fundus_lib import cli, weights
from fundus_lib.weights import WeightsError, download_weights, published_url


class FakeResponse(io.BytesIO):
    headers = {"Content-Length": None}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def serve(monkeypatch, payload: bytes) -> list[str]:
    requested = []

    def urlopen(url, timeout):
        requested.append(url)
        return FakeResponse(payload)

    monkeypatch.setattr(weights.urllib.request, "urlopen", urlopen)
    return requested


def test_published_urls_come_from_the_libraries():
    assert published_url("resnet18").endswith("/resnet18-f37072fd.pth")
    assert published_url("efficientnet-b3").endswith("/efficientnet-b3-5fb5a3c3.pth")
    assert published_url("inception_v3").rsplit("/", 1)[-1].startswith("inception_v3_google-")
    with pytest.raises(WeightsError, match="small-cnn has no published ImageNet weights"):
        published_url("small-cnn")


def test_a_download_whose_hash_matches_is_kept(tmp_path, monkeypatch):
    """A payload whose sha256 begins with the published name's prefix is accepted: we rename the
    published file to carry our payload's hash, as if the publisher had published it."""
    payload = b"weights"
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    monkeypatch.setattr(weights, "published_url", lambda name: f"https://example.invalid/resnet18-{prefix}.pth")
    requested = serve(monkeypatch, payload)
    path = download_weights("resnet18", tmp_path / "weights", progress=False)
    assert path.read_bytes() == payload and path.name == f"resnet18-{prefix}.pth"
    assert requested == [f"https://example.invalid/resnet18-{prefix}.pth"]
    assert download_weights("resnet18", tmp_path / "weights", progress=False) == path  # there: checked, not fetched
    assert len(requested) == 1
    assert weights.pretrained_weights_file("resnet18", tmp_path / "weights") == path


def test_a_download_with_another_hash_is_refused_and_removed(tmp_path, monkeypatch):
    serve(monkeypatch, b"a truncated or altered file")
    with pytest.raises(WeightsError, match="is not the published file"):
        download_weights("resnet18", tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_without_network_one_line_names_the_url_and_the_folder(tmp_path, monkeypatch, capsys):
    def offline(url, timeout):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(weights.urllib.request, "urlopen", offline)
    assert cli.main(["weights", "efficientnet-b0", "--weights-dir", str(tmp_path), "--quiet"]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1
    assert published_url("efficientnet-b0") in message and str(tmp_path.resolve()) in message
    assert "efficientnet-b0-355c32eb.pth" in message and list(tmp_path.iterdir()) == []
