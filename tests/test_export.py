"""pth -> ONNX -> simplified ONNX under ONNX Runtime, ATC command lines, and the CLI."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxsim")
torch.set_num_threads(1)

from test_checkpoint import reference_inputs, reference_logits, seed_checkpoint  # noqa: E402, F401
from test_models import N_CONFIGS, assert_logits_close, config_id, oracle, oracle_input, oracle_model  # noqa: E402

from e3d_stream.cli import main  # noqa: E402
from e3d_stream.errors import ConfigError  # noqa: E402
from e3d_stream.models import build_model  # noqa: E402
from e3d_stream.models.checkpoint import save_checkpoint  # noqa: E402
from e3d_stream.seed._export import atc_command, default_om_name, export_onnx, parse_batches  # noqa: E402

# what ONNX Runtime raises for an input its graph rejects (none derives from a builtin but Exception)
_ort_state = ort.capi.onnxruntime_pybind11_state
ORT_ERRORS = (_ort_state.InvalidArgument, _ort_state.Fail, _ort_state.RuntimeException)

# configurations of architectures.json whose export takes seconds (MobileNetV2 x2,
# C3D, ResNet-50, ResNeXt-101): marked slow. All others, MobileNetV2 1.0,
# ShuffleNetV2 and ResNet-18 among them, run by default.
SLOW_EXPORTS = (2, 11, 13, 14)
DEFAULT_EXPORTS = tuple(i for i in range(N_CONFIGS) if i not in SLOW_EXPORTS)


def run_onnx(path, inputs: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(["class"], {"image": inputs})[0]


def graph_io(path) -> tuple[list, list]:
    model = onnx.load(str(path))
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    return ([(i.name, dims(i)) for i in model.graph.input], [(o.name, dims(o)) for o in model.graph.output])


def test_seed_checkpoint_exports_and_matches_reference(tmp_path, seed_checkpoint, reference_inputs,
                                                       reference_logits):
    out = tmp_path / "Efficient-3DCNNs_sim.onnx"
    result = export_onnx(seed_checkpoint, out)
    assert result.simplified and result.opset == 11 and result.arch == "mobilenetv2"
    assert result.max_abs_diff <= 1e-4 * result.max_abs_logit
    # one self-contained file with the seed's interface
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
    model = onnx.load(str(out), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [11]
    assert graph_io(out) == ([("image", ["batch", 3, 16, 112, 112])], [("class", ["batch", 101])])
    # all reference clips in one dynamic batch
    assert_logits_close(run_onnx(out, reference_inputs), reference_logits, 1e-3)
    assert (run_onnx(out, reference_inputs).argmax(1) == reference_logits.argmax(1)).all()


def _export_oracle_config(tmp_path, index):
    model = oracle_model(index)
    out = tmp_path / f"config{index}.onnx"
    result = export_onnx(model, out)
    assert result.max_abs_diff <= 1e-4 * result.max_abs_logit
    got = run_onnx(out, oracle_input())
    assert_logits_close(got, np.asarray(oracle()["configs"][index]["logits"], dtype=np.float32), 1e-3)


@pytest.mark.parametrize("index", DEFAULT_EXPORTS, ids=config_id)
def test_architecture_exports_and_runs_under_onnxruntime(tmp_path, fixtures_dir, index):
    _export_oracle_config(tmp_path, index)


@pytest.mark.slow
@pytest.mark.parametrize("index", SLOW_EXPORTS, ids=config_id)
def test_architecture_exports_and_runs_under_onnxruntime_slow(tmp_path, fixtures_dir, index):
    _export_oracle_config(tmp_path, index)


@pytest.mark.slow
@pytest.mark.parametrize("arch,options", [("resnet", {"model_depth": 200}), ("resnext", {"model_depth": 152})])
def test_deepest_models_export(tmp_path, arch, options):
    model = build_model(arch, num_classes=101, **options)
    result = export_onnx(model, tmp_path / "deep.onnx")
    assert result.max_abs_diff <= 1e-4 * result.max_abs_logit


def test_fixed_batch_without_simplification(tmp_path):
    model = build_model("shufflenetv2", num_classes=9, width_mult=0.25)
    out = tmp_path / "fixed.onnx"
    result = export_onnx(model, out, batch=3, simplify=False)
    assert (result.batch, result.simplified, result.input_shape) == (3, False, (3, 3, 16, 112, 112))
    assert graph_io(out) == ([("image", [3, 3, 16, 112, 112])], [("class", [3, 9])])
    with pytest.raises(ORT_ERRORS, match="(?i)dimension|shape"):  # the batch really is fixed
        run_onnx(out, np.zeros((2, 3, 16, 112, 112), np.float32))


def test_pool_kernel_is_fixed_at_export(tmp_path):
    model = build_model("mobilenetv2", num_classes=5)
    out = tmp_path / "m.onnx"
    export_onnx(model, out, check=False)
    assert run_onnx(out, np.zeros((1, 3, 16, 112, 112), np.float32)).shape == (1, 5)
    with pytest.raises(ORT_ERRORS):  # documented: only the exported clip size is accepted
        run_onnx(out, np.zeros((1, 3, 32, 112, 112), np.float32))


class _Drifting(torch.nn.Module):
    """Scales its output by how often it has run: the traced graph freezes one count."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x.mean(dim=(2, 3, 4)) * float(self.calls)


def test_disagreement_above_tolerance_fails(tmp_path):
    with pytest.raises(ConfigError, match="differs from torch"):
        export_onnx(_Drifting(), tmp_path / "t.onnx")


@pytest.mark.parametrize("kwargs,fragment", [
    ({"opset": 7}, "opset=7"),
    ({"batch": 0}, "batch=0"),
    ({"width_mult": 2.0}, "only apply when exporting a checkpoint"),
])
def test_bad_export_options(tmp_path, kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        export_onnx(build_model("mobilenet", num_classes=2, width_mult=0.25), tmp_path / "x.onnx", **kwargs)


def test_atc_command_has_the_seed_flags():
    # seed section 3.2, batch 1, with ${chip_name} = Ascend310P3
    assert atc_command("Efficient-3DCNNs_sim.onnx", batch=1) == (
        'atc --model=Efficient-3DCNNs_sim.onnx --framework=5 --output=Efficient-3DCNNs_bs1 '
        '--input_format=NCDHW --input_shape="image:1,3,16,112,112" --log=error --soc_version=Ascend310P3')
    line = atc_command("out dir/m.onnx", batch=64, soc_version="Ascend310")
    assert "--model='out dir/m.onnx'" in line and "--output='out dir/m_bs64'" in line
    assert '--input_shape="image:64,3,16,112,112"' in line and line.endswith("--soc_version=Ascend310")
    assert default_om_name("a/b_sim.onnx", 4) == "a/b_bs4"


@pytest.mark.parametrize("kwargs,fragment", [
    ({"batch": 0}, "batch=0"),
    ({"batch": 1, "soc_version": "310P3; rm -rf /"}, "soc_version"),
    ({"batch": 1, "log": "loud"}, "log='loud'"),
])
def test_atc_command_validates(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        atc_command("m.onnx", **kwargs)


def test_parse_batches():
    assert parse_batches("1,4,8,16,32,64") == (1, 4, 8, 16, 32, 64)
    for bad in ("", "1,x", "0,4", "-1"):
        with pytest.raises(ConfigError):
            parse_batches(bad)


def test_cli_export_prints_diff_and_atc_commands(tmp_path, capsys):
    model = build_model("shufflenetv2", num_classes=7, width_mult=0.5)
    ckpt = save_checkpoint(model, tmp_path / "s.pth", arch="shufflenetv2")
    out = tmp_path / "s.onnx"
    assert main(["export", str(ckpt), str(out), "--atc", "1,4", "--soc_version", "Ascend310"]) == 0
    text = capsys.readouterr().out
    assert "max abs diff" in text and out.is_file()
    atc_lines = [line for line in text.splitlines() if line.startswith("atc ")]
    assert len(atc_lines) == 2
    assert '"image:4,3,16,112,112"' in atc_lines[1] and "--soc_version=Ascend310" in atc_lines[1]


def test_cli_export_errors(tmp_path, capsys):
    assert main(["export", str(tmp_path / "absent.pth"), str(tmp_path / "x.onnx")]) == 1
    assert "not found" in capsys.readouterr().err
    ckpt = save_checkpoint(build_model("mobilenet", num_classes=2, width_mult=0.25), tmp_path / "m.pth",
                           arch="mobilenet")
    assert main(["export", str(ckpt), str(tmp_path / "x.onnx"), "--arch", "c3d"]) == 1
    assert "wrong arch" in capsys.readouterr().err
    assert main(["export", str(ckpt), str(tmp_path / "x.onnx"), "--atc", "1", "--soc_version", "310"]) == 1
    assert "soc_version" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_cli_flags_reach_the_exporter(tmp_path, capsys):
    ckpt = save_checkpoint(build_model("shufflenetv2", num_classes=4, width_mult=0.25), tmp_path / "s.pth",
                           arch="shufflenetv2")
    out = tmp_path / "fixed.onnx"
    assert main(["export", str(ckpt), str(out), "--no-simplify", "--no-check", "--batch", "2"]) == 0
    text = capsys.readouterr().out
    assert "not simplified" in text and "max abs diff" not in text
    assert graph_io(out) == ([("image", [2, 3, 16, 112, 112])], [("class", [2, 4])])


def test_uint8_input_model_gives_the_logits_of_the_float_model_on_host_normalised_clips(tmp_path, capsys):
    """Cast + Sub(mean) at the front of the graph is the reference's float32 arithmetic."""
    from e3d_stream.constants import MEAN_RGB_F32

    model = build_model("mobilenetv2", num_classes=6, width_mult=0.25)
    f32 = export_onnx(model, tmp_path / "f32.onnx")
    u8 = export_onnx(model, tmp_path / "u8.onnx", uint8_input=True)
    assert (f32.input_dtype, u8.input_dtype) == ("float32", "uint8")
    assert u8.max_abs_diff <= 1e-4 * u8.max_abs_logit
    graph = onnx.load(str(tmp_path / "u8.onnx")).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    (cast,) = [n for n in graph.node if "image" in n.input]
    (sub,) = [n for n in graph.node if cast.output[0] in n.input]
    assert (cast.op_type, sub.op_type) == ("Cast", "Sub")
    clips = np.random.default_rng(3).integers(0, 256, (3, 3, 16, 112, 112), dtype=np.uint8)
    normalised = np.subtract(clips, MEAN_RGB_F32.reshape(1, 3, 1, 1, 1), dtype=np.float32)
    got = run_onnx(tmp_path / "u8.onnx", clips)
    want = run_onnx(tmp_path / "f32.onnx", normalised)
    np.testing.assert_array_equal(got, want)   # bit-identical under ONNX Runtime CPU
    assert main(["export", str(save_checkpoint(model, tmp_path / "m.pth", arch="mobilenetv2")),
                 str(tmp_path / "cli.onnx"), "--uint8_input", "--width_mult", "0.25", "--atc", "4"]) == 0
    out = capsys.readouterr().out
    assert "input image uint8 batchx3x16x112x112" in out and 'atc --model=' in out and '"image:4,3,16,112,112"' in out
