"""Weights resolution order, offline behaviour, one-line errors, and the sha256 fingerprint."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from fastsam_geo import weights as W
from fastsam_geo.errors import FastSAMGeoError, WeightsError
from fastsam_geo.weights import resolve_weights, sha256_file


@pytest.fixture
def repo_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty stand-in for the repository's ``weights/`` folder; no env var; offline; cwd elsewhere."""
    folder = tmp_path / "repo_weights"
    folder.mkdir()
    monkeypatch.setattr(W, "WEIGHTS_DIR", folder)
    monkeypatch.setattr(W, "BUNDLED_DIR", tmp_path / "no_bundled_weights")
    monkeypatch.delenv(W.ENV_VAR, raising=False)
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return folder


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not really a checkpoint")
    return path


def test_explicit_existing_path_wins(repo_weights: Path, tmp_path: Path) -> None:
    own = touch(tmp_path / "mine" / "FastSAM-s.pt")
    touch(repo_weights / "FastSAM-s.pt")
    assert resolve_weights(own) == own.resolve()
    assert resolve_weights(str(own)) == own.resolve()


def test_relative_existing_path_is_resolved(repo_weights: Path) -> None:
    touch(Path("local.pt"))
    assert resolve_weights("local.pt") == Path("local.pt").resolve()


def test_bare_name_found_in_repo_weights_then_env(
    repo_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_dir = tmp_path / "env"
    touch(env_dir / "FastSAM-x.pt")
    monkeypatch.setenv(W.ENV_VAR, str(env_dir))
    assert resolve_weights("FastSAM-x.pt") == (env_dir / "FastSAM-x.pt").resolve()
    touch(repo_weights / "FastSAM-x.pt")
    assert resolve_weights("FastSAM-x.pt") == repo_weights / "FastSAM-x.pt"  # weights/ comes first


def test_bare_name_matches_env_file_of_that_name_only(
    repo_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = touch(tmp_path / "elsewhere" / "FastSAM-s.pt")
    monkeypatch.setenv(W.ENV_VAR, str(env_file))
    assert resolve_weights("FastSAM-s.pt") == env_file.resolve()
    with pytest.raises(WeightsError):
        resolve_weights("FastSAM-x.pt")


def test_default_is_env_then_project_model(
    repo_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(WeightsError, match=re.escape(W.DEFAULT_WEIGHTS)):
        resolve_weights(None)
    default = touch(repo_weights / W.DEFAULT_WEIGHTS)
    assert resolve_weights(None) == default
    env_file = touch(tmp_path / "env.pt")
    monkeypatch.setenv(W.ENV_VAR, str(env_file))
    assert resolve_weights() == env_file.resolve()
    env_dir = tmp_path / "envdir"
    env_dir.mkdir()
    monkeypatch.setenv(W.ENV_VAR, str(env_dir))
    assert resolve_weights() == default.resolve()  # a folder without the default name: ours
    touch(env_dir / W.DEFAULT_WEIGHTS)
    assert resolve_weights() == (env_dir / W.DEFAULT_WEIGHTS).resolve()


def test_env_pointing_nowhere_is_an_error(repo_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(repo_weights / W.DEFAULT_WEIGHTS)
    monkeypatch.setenv(W.ENV_VAR, "/no/such/model.pt")
    with pytest.raises(WeightsError, match=re.escape("/no/such/model.pt")):
        resolve_weights()


def test_offline_not_found_says_where_and_how(repo_weights: Path) -> None:
    with pytest.raises(WeightsError) as info:
        resolve_weights("FastSAM-s.pt")
    msg = str(info.value)
    assert "\n" not in msg
    assert "'FastSAM-s.pt'" in msg
    assert str(repo_weights / "FastSAM-s.pt") in msg
    assert str(Path("FastSAM-s.pt").resolve()) in msg
    assert W.ENV_VAR in msg
    assert W.FASTSAM_S_URL in msg
    assert "YOLO_OFFLINE" in msg
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, FastSAMGeoError)


def test_online_official_names_are_left_to_ultralytics(
    repo_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YOLO_OFFLINE", "0")
    assert resolve_weights("FastSAM-s.pt") == Path("FastSAM-s.pt")
    assert resolve_weights("FastSAM-x.pt") == Path("FastSAM-x.pt")
    monkeypatch.delenv("YOLO_OFFLINE")
    assert resolve_weights("FastSAM-x.pt") == Path("FastSAM-x.pt")
    with pytest.raises(WeightsError):
        resolve_weights("my-model.pt")  # never downloaded
    with pytest.raises(WeightsError):
        resolve_weights("sub/FastSAM-s.pt")  # a path, not a name
    monkeypatch.setenv("YOLO_OFFLINE", "true")
    with pytest.raises(WeightsError):
        resolve_weights("FastSAM-s.pt")


def test_missing_path_and_folder(repo_weights: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="missing"):
        resolve_weights(tmp_path / "missing" / "model.pt")
    with pytest.raises(WeightsError, match="is a folder"):
        resolve_weights(tmp_path)


def test_sha256_file_streams_and_matches_hashlib(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    path = tmp_path / "blob.pt"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(path, chunk_size=4096) == hashlib.sha256(data).hexdigest()


def test_docstring_warns_about_pickles() -> None:
    assert "pickle" in (W.__doc__ or "") and "arbitrary code" in (W.__doc__ or "")


def test_default_is_the_onnx_without_torch(repo_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without torch the default is the bundled .onnx; with torch the .pt, falling back on the .onnx."""
    (repo_weights / W.DEFAULT_ONNX).write_bytes(b"onnx")
    monkeypatch.setattr(W, "torch_available", lambda: False)
    assert W.resolve_weights() == repo_weights / W.DEFAULT_ONNX
    monkeypatch.setattr(W, "torch_available", lambda: True)
    assert W.resolve_weights() == repo_weights / W.DEFAULT_ONNX  # no .pt there: the .onnx still runs
    (repo_weights / W.DEFAULT_WEIGHTS).write_bytes(b"pt")
    assert W.resolve_weights() == repo_weights / W.DEFAULT_WEIGHTS
