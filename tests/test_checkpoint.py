"""Checkpoint loading: the seed's checkpoint, upstream format, and the errors for a misfit."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from PIL import Image  # noqa: E402
from test_models import assert_logits_close, config, oracle, oracle_input, rule_state_dict  # noqa: E402

from e3d_stream.errors import BackendUnavailableError, CheckpointError, ConfigError  # noqa: E402
from e3d_stream.models import add_arch_arguments, arch_options, build_model  # noqa: E402
from e3d_stream.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint  # noqa: E402

# SPEC A.5-A.7, written out here rather than imported, so the inputs are
# rebuilt independently of the library's data path
MEAN = np.asarray([114.7748, 107.7354, 99.4750], dtype=np.float32)
SEED_PARAMETERS = 2_483_429  # SPEC D


def reference_clip(fixtures_dir: Path, clip: dict) -> np.ndarray:
    """Clip k of the seed pipeline from the fixture JPEGs: (1, 3, 16, 112, 112) float32."""
    folder = fixtures_dir / "rawframes" / clip["label"] / clip["video_id"]
    frames = []
    for n in clip["frame_indices"]:
        with Image.open(folder / f"image_{n:05d}.jpg") as img:
            rgb = img.convert("RGB")
        assert rgb.size == (320, 240)  # every fixture video; 149x112 below assumes it
        small = np.asarray(rgb.resize((149, 112), Image.BILINEAR), dtype=np.float32)
        frames.append(small[:, 18:130] - MEAN)  # centre crop x1 = round((149 - 112) / 2) = 18
    return np.ascontiguousarray(np.stack(frames).transpose(3, 0, 1, 2)[None], dtype="<f4")


@pytest.fixture(scope="session")
def reference_inputs(fixtures_dir, ref_clips) -> np.ndarray:
    """All reference clips, (n_clips, 3, 16, 112, 112), each hash-checked against clips.json."""
    clips = []
    for clip in ref_clips["clips"]:
        array = reference_clip(fixtures_dir, clip)
        assert hashlib.sha256(array.tobytes()).hexdigest() == clip["sha256"]["jpeg"], f"clip {clip['k']}"
        clips.append(array)
    return np.concatenate(clips)


@pytest.fixture(scope="session")
def reference_logits(fixtures_dir) -> np.ndarray:
    return np.load(fixtures_dir / "reference" / "jpeg_clip_logits.npy")


@pytest.fixture(scope="session")
def seed_checkpoint(fixtures_dir) -> Path:
    return fixtures_dir / "checkpoint.pth"


def test_seed_checkpoint_loads(seed_checkpoint):
    model, info = load_checkpoint(seed_checkpoint)
    assert (info.arch, info.num_classes, info.epoch) == ("mobilenetv2", 101, 1)
    assert info.n_parameters == SEED_PARAMETERS
    assert info.options["width_mult"] == 1.0
    assert (info.sample_size, info.sample_duration) == (112, 16)
    assert not model.training
    with pytest.raises(TypeError):
        info.options["width_mult"] = 2.0  # read-only record


def test_seed_checkpoint_logits_match_reference(seed_checkpoint, reference_inputs, reference_logits):
    model, _ = load_checkpoint(seed_checkpoint)
    with torch.no_grad():
        got = np.concatenate([model(torch.from_numpy(reference_inputs[i:i + 4])).numpy()
                              for i in range(0, len(reference_inputs), 4)])
    assert_logits_close(got, reference_logits, 1e-4)
    assert (got.argmax(1) == reference_logits.argmax(1)).all()


def test_save_checkpoint_writes_upstream_format_and_round_trips(tmp_path, fixtures_dir):
    _, options, _ = config(8)  # shufflenetv2 0.25: small
    model = build_model("shufflenetv2", num_classes=101, **options)
    model.load_state_dict(rule_state_dict(8))
    path = save_checkpoint(model, tmp_path / "c.pth", arch="shufflenetv2", epoch=3, best_prec1=0.5)

    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"epoch", "arch", "state_dict", "optimizer", "best_prec1"}
    assert raw["arch"] == "shufflenetv2" and raw["epoch"] == 3 and raw["best_prec1"] == 0.5
    assert all(k.startswith("module.") for k in raw["state_dict"])

    # no options given: the width is read back from the weights
    loaded, info = load_checkpoint(path)
    assert info.options["width_mult"] == 0.25 and info.epoch == 3
    with torch.no_grad():
        got = loaded(torch.from_numpy(oracle_input())).numpy()
    assert_logits_close(got, np.asarray(oracle()["configs"][8]["logits"], dtype=np.float32), 1e-4)


def test_bare_state_dict_needs_arch(tmp_path):
    model = build_model("squeezenet", num_classes=11, version=1.0)
    path = tmp_path / "bare.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError, match="names no 'arch'"):
        load_checkpoint(path)
    _, info = load_checkpoint(path, arch="squeezenet")
    assert (info.num_classes, info.options["version"]) == (11, 1.0)


def test_resnet_depth_from_arch_string(tmp_path):
    model = build_model("resnet", num_classes=3, model_depth=10, resnet_shortcut="A")
    path = save_checkpoint(model, tmp_path / "r.pth", arch="resnet")
    raw = torch.load(path, weights_only=True)
    raw["arch"] = "resnet-10"  # the 3D-ResNets spelling
    torch.save(raw, path)
    _, info = load_checkpoint(path)
    assert (info.arch, info.options["model_depth"], info.options["resnet_shortcut"]) == ("resnet", 10, "A")


def test_requested_arch_must_match_saved_arch(seed_checkpoint):
    with pytest.raises(CheckpointError, match=r"arch='mobilenetv2'.*arch='shufflenetv2'"):
        load_checkpoint(seed_checkpoint, arch="shufflenetv2")


def test_wrong_class_count_names_classifier_and_shape(seed_checkpoint):
    with pytest.raises(CheckpointError, match=r"classifier\.1\.weight has shape \(101, 1280\).*num_classes=51"):
        load_checkpoint(seed_checkpoint, num_classes=51)


def test_wrong_width_names_keys_and_both_shapes(seed_checkpoint):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(seed_checkpoint, width_mult=0.5)
    assert "features.0.0.weight: checkpoint (32, 3, 3, 3, 3) vs model (16, 3, 3, 3, 3)" in str(err.value)


def test_mislabelled_arch_lists_missing_and_unexpected_keys(tmp_path):
    model = build_model("mobilenetv2", num_classes=101)
    path = save_checkpoint(model, tmp_path / "m.pth", arch="mobilenet")  # lies about its arch
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    text = str(err.value)
    assert "missing from the checkpoint" in text and "features.1.conv1.weight (32, 1, 3, 3, 3)" in text
    assert "unexpected in the checkpoint" in text and "features.1.conv.0.weight (32, 1, 3, 3, 3)" in text


def test_missing_key_is_named(tmp_path):
    model = build_model("shufflenetv2", num_classes=10, width_mult=0.5)
    path = save_checkpoint(model, tmp_path / "s.pth", arch="shufflenetv2")
    raw = torch.load(path, weights_only=True)
    del raw["state_dict"]["module.conv_last.1.running_var"]
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint \(1\): conv_last\.1\.running_var \(1024\)"):
        load_checkpoint(path)


def test_missing_num_batches_tracked_is_tolerated(tmp_path):
    model = build_model("mobilenet", num_classes=4, width_mult=0.5)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save({"arch": "mobilenet", "epoch": 9, "state_dict": state, "optimizer": {}, "best_prec1": 0.1}, path)
    loaded, info = load_checkpoint(path, width_mult=0.5)
    assert info.num_classes == 4
    for key, value in state.items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_unreadable_files_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "absent.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        read_checkpoint(junk)
    listing = tmp_path / "list.pth"
    torch.save([1, 2, 3], listing)
    with pytest.raises(CheckpointError, match="expected an upstream checkpoint"):
        read_checkpoint(listing)


def test_cli_options_become_load_kwargs():
    parser = argparse.ArgumentParser()
    add_arch_arguments(parser)
    args = parser.parse_args(["--arch", "resnext", "--model_depth", "152", "--resnext_cardinality", "16",
                              "--n_classes", "51", "--resnet_shortcut", "A"])
    assert arch_options(args) == {"arch": "resnext", "model_depth": 152, "resnext_cardinality": 16,
                                  "num_classes": 51, "resnet_shortcut": "A"}
    assert arch_options(parser.parse_args([])) == {}
    with pytest.raises(SystemExit):
        parser.parse_args(["--arch", "vgg"])



def test_device_is_validated(seed_checkpoint):
    with pytest.raises(ConfigError, match="invalid device 'bogus'"):
        load_checkpoint(seed_checkpoint, device="bogus")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="'cuda'"):
            load_checkpoint(seed_checkpoint, device="cuda")
