"""Architectures against the upstream oracle in ../shared/fixtures/architectures.json.

For each of its 15 configurations the state-dict keys and shapes, the parameter
count and the logits (weights filled by the documented rule, fixed input) must
equal what upstream's own model code produced.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from conftest import require_fixtures  # noqa: E402

from e3d_stream.errors import ConfigError  # noqa: E402
from e3d_stream.models import ARCHITECTURES, build_model, resolve_options  # noqa: E402
from e3d_stream.models.shapes import infer_options, split_arch  # noqa: E402

#: architectures.json option names -> build_model names
FIXTURE_OPTION = {"depth": "model_depth", "shortcut_type": "resnet_shortcut", "cardinality": "resnext_cardinality"}
N_CONFIGS = 15


@functools.lru_cache(maxsize=1)
def oracle() -> dict:
    return json.loads((require_fixtures() / "architectures.json").read_text())


def config(index: int) -> tuple[str, dict, dict]:
    """(arch, build_model options, raw record) of configuration ``index``."""
    record = oracle()["configs"][index]
    options = {FIXTURE_OPTION.get(k, k): v for k, v in record["options"].items()}
    return record["arch"], options, record


def config_id(index: int) -> str:
    # ids must not need the fixtures at collection time
    return f"config{index}"


def rule_tensor(key: str, shape: tuple, weight_seed: int):
    """The fixture's fill rule (architectures.md), written from its prose."""
    rng = np.random.default_rng(zlib.crc32(key.encode()) ^ weight_seed)
    if key.endswith("num_batches_tracked"):
        return torch.tensor(0, dtype=torch.int64)
    if key.endswith("running_var"):
        value = 0.5 + rng.random(shape)
    elif key.endswith("running_mean"):
        value = 0.1 * rng.standard_normal(shape)
    elif len(shape) == 1 and key.endswith("weight"):
        value = 1 + 0.1 * rng.standard_normal(shape)
    elif len(shape) == 1 and key.endswith("bias"):
        value = 0.1 * rng.standard_normal(shape)
    else:
        value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
    return torch.from_numpy(np.asarray(value, dtype=np.float32))


def rule_state_dict(index: int) -> dict:
    """Upstream-keyed weights of configuration ``index`` filled by the rule."""
    _, _, record = config(index)
    seed = oracle()["weight_seed"]
    return {key: rule_tensor(key, tuple(shape), seed) for key, shape in record["state_dict"]}


def oracle_input() -> np.ndarray:
    return (np.random.default_rng(oracle()["input_seed"]).standard_normal((2, 3, 16, 112, 112)) * 50).astype(np.float32)


def oracle_model(index: int):
    """Configuration ``index`` built here, loaded strictly with the rule weights, in eval mode."""
    arch, options, _ = config(index)
    model = build_model(arch, num_classes=oracle()["num_classes"], **options)
    model.load_state_dict(rule_state_dict(index), strict=True)
    return model.eval()


def assert_logits_close(got: np.ndarray, want: np.ndarray, rel: float) -> None:
    """The one tolerance rule of these tests: max|got - want| <= rel * max|want|."""
    assert got.shape == want.shape
    err = float(np.abs(got - want).max())
    peak = float(np.abs(want).max())
    assert err <= rel * peak, f"max abs error {err:.3g} > {rel:g} x max|logit| {peak:.3g}"


def test_oracle_has_fifteen_configs(fixtures_dir):
    assert len(oracle()["configs"]) == N_CONFIGS
    assert {c["arch"] for c in oracle()["configs"]} == set(ARCHITECTURES)


@pytest.mark.parametrize("index", range(N_CONFIGS), ids=config_id)
def test_upstream_keys_shapes_and_parameter_count(fixtures_dir, index):
    arch, options, record = config(index)
    model = build_model(arch, num_classes=101, **options)
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == [
        (k, list(s)) for k, s in record["state_dict"]]
    assert sum(p.numel() for p in model.parameters()) == record["parameters"]


@pytest.mark.parametrize("index", range(N_CONFIGS), ids=config_id)
def test_upstream_logits(fixtures_dir, index):
    model = oracle_model(index)
    with torch.no_grad():
        got = model(torch.from_numpy(oracle_input())).numpy()
    assert_logits_close(got, np.asarray(oracle()["configs"][index]["logits"], dtype=np.float32), 1e-4)


@pytest.mark.parametrize("index", range(N_CONFIGS), ids=config_id)
def test_options_read_back_from_weight_shapes(fixtures_dir, index):
    arch, options, record = config(index)
    shapes = {k: tuple(s) for k, s in record["state_dict"]}
    found = infer_options(arch, shapes)
    # every option read from the weights equals the one upstream was built with
    assert {k: v for k, v in found.items() if k in options} == {k: options[k] for k in found if k in options}
    expected_readable = {"resnet": {"model_depth", "resnet_shortcut"},
                         "resnext": {"model_depth", "resnet_shortcut", "resnext_cardinality"},
                         "squeezenet": {"version"}, "shufflenet": {"groups"},
                         "shufflenetv2": {"width_mult"}}.get(arch, set())
    assert set(found) == expected_readable


@pytest.mark.parametrize("depth", [10, 34, 101, 152, 200])
def test_other_resnet_depths_are_read_back(depth):
    model = build_model("resnet", num_classes=7, model_depth=depth, resnet_shortcut="B")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert infer_options("resnet", shapes) == {"model_depth": depth, "resnet_shortcut": "B"}


@pytest.mark.parametrize("depth,cardinality", [(50, 32), (152, 16)])
def test_resnext_depth_and_cardinality_are_read_back(depth, cardinality):
    model = build_model("resnext", num_classes=7, model_depth=depth, resnext_cardinality=cardinality,
                        resnet_shortcut="A")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert infer_options("resnext", shapes) == {"model_depth": depth, "resnet_shortcut": "A",
                                                "resnext_cardinality": cardinality}


@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_shufflenet_groups(groups):
    model = build_model("shufflenet", num_classes=5, groups=groups).eval()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert infer_options("shufflenet", shapes) == {"groups": groups}
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 16, 112, 112)).shape == (1, 5)


def test_arch_strings_with_depth():
    assert split_arch("resnext-101") == ("resnext", {"model_depth": 101})
    assert split_arch("mobilenetv2") == ("mobilenetv2", {})


@pytest.mark.parametrize("arch,options,fragment", [
    ("nope", {}, "allowed"),
    ("shufflenet", {"groups": 5}, "groups=5"),
    ("shufflenetv2", {"width_mult": 0.3}, "width_mult=0.3"),
    ("resnet", {"model_depth": 20}, "model_depth=20"),
    ("resnext", {"model_depth": 18}, "model_depth=18"),
    ("resnet", {"resnet_shortcut": "C"}, "resnet_shortcut='C'"),
    ("squeezenet", {"version": 1.2}, "version=1.2"),
    ("mobilenetv2", {"sample_size": 100}, "multiple of 16"),
    ("mobilenetv2", {"dropout": 1.5}, "dropout=1.5"),
])
def test_bad_options_name_the_value_and_the_allowed_set(arch, options, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        build_model(arch, num_classes=101, **options)


def test_unknown_option_is_rejected():
    with pytest.raises(ConfigError, match="width"):
        resolve_options("mobilenetv2", num_classes=101, widht_mult=1.0)


def test_dropout_probability_is_configurable():
    model = build_model("mobilenetv2", num_classes=101, dropout=0.9)
    assert model.classifier[0].p == 0.9
    assert isinstance(model.classifier[1], torch.nn.Linear)


def test_importing_models_and_export_does_not_import_torch():
    code = ("import sys, e3d_stream.models, e3d_stream.seed._export, e3d_stream.commands.export; "
            "bad = [m for m in ('torch', 'onnxruntime', 'onnx') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
