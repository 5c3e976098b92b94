"""Registry, simulated, ONNX Runtime and PyTorch sessions.

Truths are computed in the tests: numpy for the tiny ONNX graph, a plain
contiguous-layout forward of the same torch module for the torch session.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest

from e3d_stream.constants import CLIP_SHAPE
from e3d_stream.errors import BackendUnavailableError, ConfigError, SessionError
from e3d_stream.sessions import BACKENDS, DoubleBuffer, open_session, parse_device, resolve_backend


def clips(n, seed=0):
    return np.random.default_rng(seed).uniform(-110, 140, (n, *CLIP_SHAPE)).astype(np.float32)


# -- registry -------------------------------------------------------------------------

def test_import_pulls_in_no_backend():
    code = ("import sys, e3d_stream, e3d_stream.sessions; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'ais_bench') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name, backend", [("m.onnx", "onnxruntime"), ("M.ONNX", "onnxruntime"),
                                           ("m.pth", "torch"), ("m.pt", "torch"),
                                           ("m.pth.tar", "torch"), ("m.om", "ais_bench")])
def test_backend_from_extension(name, backend):
    assert resolve_backend(name) == backend


def test_backend_resolution_errors():
    with pytest.raises(ConfigError, match=r"known extensions: .onnx \(onnxruntime\)"):
        resolve_backend("model.tflite")
    with pytest.raises(ConfigError, match="backend='simulated'"):
        resolve_backend(None)
    with pytest.raises(ConfigError,
                       match="unknown backend 'tensorrt'; choose one of onnxruntime, torch, ais_bench, simulated"):
        open_session("m.onnx", backend="tensorrt")
    assert list(BACKENDS) == ["onnxruntime", "torch", "ais_bench", "simulated"]


@pytest.mark.parametrize("device, expected", [("cpu", ("cpu", 0)), ("cuda", ("cuda", 0)), ("CUDA:1", ("cuda", 1)),
                                              ("npu:3", ("npu", 3))])
def test_parse_device(device, expected):
    assert parse_device(device) == expected


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cpu:1", "", "npu:"])
def test_bad_device_names_the_allowed_set(device):
    with pytest.raises(ConfigError, match="'cpu', 'cuda' or 'cuda:N', 'npu' or 'npu:N'"):
        open_session(None, backend="simulated", device=device)


def test_option_errors():
    with pytest.raises(ConfigError, match="model file not found"):
        open_session("/nonexistent/model.onnx")
    with pytest.raises(ConfigError, match="does not accept.*'colour'.*ms_per_clip"):
        open_session(None, backend="simulated", colour="red")
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        open_session(None, backend="simulated", batch_size=0)
    with pytest.raises(ConfigError, match="threads must be a positive integer"):
        open_session(None, backend="simulated", threads=1.5)


def test_missing_package_names_the_extra(monkeypatch, tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    monkeypatch.delitem(sys.modules, "e3d_stream.sessions._ort", raising=False)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(BackendUnavailableError, match=r"pip install 'e3d_stream\[onnx\]'"):
        open_session(model)
    monkeypatch.delitem(sys.modules, "e3d_stream.sessions._torch", raising=False)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'e3d_stream\[torch\]'"):
        open_session(tmp_path / "m.onnx", backend="torch")


# -- simulated ------------------------------------------------------------------------

def test_simulated_logits_are_deterministic_and_input_dependent():
    x = clips(3)
    f32 = {"input_dtype": "float32"}   # clips() are normalised float32 clips
    with open_session(None, backend="simulated", ms_per_clip=0.0, **f32) as a, \
            open_session(None, backend="simulated", ms_per_clip=0.0, num_classes=7, **f32) as b:
        first = a.run(x)
        assert first.shape == (3, 101) and first.dtype == np.float32
        np.testing.assert_array_equal(a.run(x), first)
        np.testing.assert_array_equal(a.run(x[1:2]), first[1:2])      # rows are independent
        assert not np.allclose(first[0], first[1])                      # different clips, different scores
        shifted = x.copy()
        shifted[:, 0, 5] += 30.0                                        # change one frame of one channel
        assert not np.allclose(a.run(shifted), first)
        assert b.run(x).shape == (3, 7) and b.num_classes == 7
    with open_session(None, backend="simulated", seed=1, **f32) as c:
        assert not np.allclose(c.run(x), first)


def test_simulated_latency_and_static_batch_padding():
    with open_session(None, backend="simulated", ms_per_clip=5.0, batch_overhead_ms=10.0, fixed_batch=4,
                      input_dtype="float32") as s:
        full = s.run(clips(4))
        short = s.run(clips(4)[:3])
        np.testing.assert_array_equal(short, full[:3])  # padding rows do not leak into real ones
        # a padded batch costs the full static batch: 4 x 5 + 10 ms at least
        assert all(ms >= 30.0 for ms in s.compute_ms) and len(s.compute_ms) == 2
        assert s.describe()["simulated"]["ms_per_clip"] == 5.0
        with pytest.raises(SessionError, match="exceeds the model's static batch 4"):
            s.run(clips(5))
    with pytest.raises(ConfigError, match="static batch of 4"):
        open_session(None, backend="simulated", fixed_batch=4, batch_size=8)
    with pytest.raises(ConfigError, match="ms_per_clip must be >= 0"):
        open_session(None, backend="simulated", ms_per_clip=-1)


def test_session_lifecycle():
    s = open_session(None, backend="simulated", ms_per_clip=0.0, input_dtype="float32")
    with pytest.raises(SessionError, match="float32"):
        s.run(clips(2).astype(np.float64))
    staged = s.upload(clips(2))
    with pytest.raises(SessionError, match="n_valid=3"):
        s.execute(staged, 3)
    s.close()
    s.close()
    with pytest.raises(SessionError, match="closed"):
        s.run(clips(1))


# -- onnxruntime ----------------------------------------------------------------------

def make_onnx(path, *, batch="N", frames=16, elem=None, classes=5, seed=0):
    """ReduceMean over (T, H, W) -> MatMul (3 x classes) -> Add: a model whose truth numpy can compute."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((3, classes)).astype(np.float32)
    b = rng.standard_normal(classes).astype(np.float32)
    elem = TensorProto.FLOAT if elem is None else elem
    if elem == TensorProto.DOUBLE:
        w, b = w.astype(np.float64), b.astype(np.float64)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["m"], axes=[2, 3, 4], keepdims=0),
         helper.make_node("MatMul", ["m", "w"], ["z"]),
         helper.make_node("Add", ["z", "b"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("image", elem, [batch, 3, frames, 112, 112])],
        [helper.make_tensor_value_info("logits", elem, [batch, classes])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return w, b


def onnx_truth(x, w, b):
    return x.mean(axis=(2, 3, 4), dtype=np.float64) @ w + b


def test_onnx_logits_match_numpy(tmp_path):
    w, b = make_onnx(tmp_path / "m.onnx")
    x = clips(3)
    with open_session(tmp_path / "m.onnx", threads=1) as s:
        assert (s.backend, s.fixed_batch, s.num_classes, s.input_spec.name) == ("onnxruntime", None, 5, "image")
        np.testing.assert_allclose(s.run(x), onnx_truth(x, w, b), rtol=1e-5, atol=1e-4)
        info = s.describe()
        assert info["providers"] == ["CPUExecutionProvider"] and info["threads"] == 1
        assert s.upload(x).reads_host  # CPU: the compute reads the host buffer
        with DoubleBuffer(s, 2) as runner:
            got = []
            for start in (0, 2):
                buf = runner.acquire()
                part = x[start:start + 2]
                buf[:len(part)] = part
                got += runner.submit(buf, len(part), start)
            got += runner.finish()
        np.testing.assert_allclose(np.concatenate([g for _, g in got]), onnx_truth(x, w, b), rtol=1e-5, atol=1e-4)


def test_onnx_spin_wait_reaches_the_session_options(tmp_path):
    from e3d_stream.sessions._ort import SPIN_WAIT_KEYS

    w, b = make_onnx(tmp_path / "m.onnx")
    x = clips(2, seed=5)

    def entries(session):  # what ONNX Runtime's own session holds, read back from it
        options = session._sess.get_session_options()
        return [options.get_session_config_entry(key) for key in SPIN_WAIT_KEYS]

    assert SPIN_WAIT_KEYS == ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")
    with open_session(tmp_path / "m.onnx", threads=2) as s:  # CPU: off unless asked (decode workers share the cores)
        assert entries(s) == ["0", "0"] and s.describe()["spin_wait"] is False
        np.testing.assert_allclose(s.run(x), onnx_truth(x, w, b), rtol=1e-5, atol=1e-4)
    # the override the pipeline passes through EvalConfig's session_options
    with open_session(tmp_path / "m.onnx", threads=2, spin_wait=True) as s:
        assert entries(s) == ["1", "1"] and s.describe()["spin_wait"] is True
        np.testing.assert_allclose(s.run(x), onnx_truth(x, w, b), rtol=1e-5, atol=1e-4)
    with open_session(tmp_path / "m.onnx", spin_wait=False) as s:
        assert entries(s) == ["0", "0"]
    with pytest.raises(ConfigError, match="spin_wait must be True, False or None"):
        open_session(tmp_path / "m.onnx", spin_wait="off")


def test_onnx_fixed_batch_pads_the_short_batch(tmp_path):
    w, b = make_onnx(tmp_path / "m.onnx", batch=4)
    x = clips(4, seed=2)
    with open_session(tmp_path / "m.onnx", batch_size=4) as s:
        assert s.fixed_batch == 4
        np.testing.assert_allclose(s.run(x[:1]), onnx_truth(x[:1], w, b), rtol=1e-5, atol=1e-4)
        with pytest.raises(SessionError, match="static batch 4"):
            s.run(clips(5))
    with pytest.raises(ConfigError, match="static batch of 4"):
        open_session(tmp_path / "m.onnx", batch_size=16)


def test_onnx_unfit_models_are_refused(tmp_path):
    from onnx import TensorProto

    make_onnx(tmp_path / "short.onnx", frames=8)
    with pytest.raises(ConfigError, match=r"expected \(N, 3, 16, 112, 112\)"):
        open_session(tmp_path / "short.onnx")
    make_onnx(tmp_path / "double.onnx", elem=TensorProto.DOUBLE)
    with pytest.raises(ConfigError, match="float64; expected one of float32, uint8"):
        open_session(tmp_path / "double.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="cannot load"):
        open_session(tmp_path / "junk.onnx")
    with pytest.raises(ConfigError, match="'cpu', 'cuda' or 'cuda:N'"):
        open_session(tmp_path / "short.onnx", device="npu")


def test_onnx_cuda_without_provider_lists_the_available_ones(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    make_onnx(tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="CUDAExecutionProvider.*CPUExecutionProvider"):
        open_session(tmp_path / "m.onnx", device="cuda")


def test_onnx_cuda_matches_cpu(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu")
    w, b = make_onnx(tmp_path / "m.onnx")
    x = clips(4, seed=4)
    with open_session(tmp_path / "m.onnx", device="cuda") as s:
        assert s.upload(x[:2]).reads_host is False
        with DoubleBuffer(s, 2) as runner:
            got = []
            for start in (0, 2):
                buf = runner.acquire()
                buf[:] = x[start:start + 2]
                got += runner.submit(buf, 2, start)
            got += runner.finish()
    np.testing.assert_allclose(np.concatenate([g for _, g in got]), onnx_truth(x, w, b), rtol=1e-4, atol=1e-3)


# -- torch ----------------------------------------------------------------------------

@pytest.fixture
def torch1():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def tiny_net(torch, classes=6, in_channels=3):
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(nn.Conv3d(in_channels, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, classes))


def plain_forward(torch, net, x):
    """The truth: eval mode, contiguous layout, no session."""
    ref = copy.deepcopy(net).eval()
    with torch.no_grad():
        return ref(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("memory_format", ["auto", "contiguous", "channels_last"])
def test_torch_module_matches_plain_forward(torch1, memory_format):
    net = tiny_net(torch1)
    x = clips(3, seed=1)
    expected = plain_forward(torch1, net, x)
    with open_session(net, threads=1, memory_format=memory_format, input_dtype="float32") as s:
        assert (s.backend, s.num_classes, s.fixed_batch) == ("torch", 6, None)
        got = s.run(x)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
        assert s.describe()["memory_format"] == ("channels_last" if memory_format == "auto" else memory_format)


def test_torch_module_with_wrong_input_is_refused(torch1):
    with pytest.raises(ConfigError, match=r"does not accept \(N, 3, 16, 112, 112\)"):
        open_session(tiny_net(torch1, in_channels=1))
    with pytest.raises(ConfigError, match="memory_format 'nhwc'"):
        open_session(tiny_net(torch1), memory_format="nhwc")
    with pytest.raises(ConfigError, match="arch options apply to checkpoint files"):
        open_session(tiny_net(torch1), arch="mobilenetv2")
    if not torch1.cuda.is_available():
        with pytest.raises(ConfigError, match="sees no CUDA device"):
            open_session(tiny_net(torch1), device="cuda")


def test_torch_checkpoint_file_matches_its_model(torch1, tmp_path):
    models = pytest.importorskip("e3d_stream.models")
    from e3d_stream.models import build_model, save_checkpoint

    torch1.manual_seed(0)
    net = build_model("mobilenetv2", num_classes=7, width_mult=0.25)
    with torch1.no_grad():  # non-trivial BN statistics, so a dropped buffer would show
        for m in net.modules():
            if isinstance(m, torch1.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    path = save_checkpoint(net, tmp_path / "tiny.pth", arch="mobilenetv2")
    x = clips(2, seed=7)
    expected = plain_forward(torch1, net, x)
    # arch options reach load_checkpoint
    with open_session(path, threads=1, width_mult=0.25, input_dtype="float32") as s:
        assert s.backend == "torch" and s.num_classes == 7
        got = s.run(x)
        info = s.describe()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    assert info["checkpoint"]["arch"] == "mobilenetv2" and info["model_path"].endswith("tiny.pth")
    assert models is not None


@pytest.mark.fixtures
def test_torch_fixture_checkpoint_double_buffered(torch1, fixtures_dir):
    from e3d_stream.models import load_checkpoint

    path = fixtures_dir / "checkpoint.pth"
    net, _ = load_checkpoint(path)
    x = clips(3, seed=11)
    expected = plain_forward(torch1, net, x)
    with open_session(path, threads=1, input_dtype="float32") as s:
        got = []
        with DoubleBuffer(s, 2) as runner:
            for start in (0, 2):
                part = x[start:start + 2]
                buf = runner.acquire()
                buf[:len(part)] = part
                buf[len(part):] = 0
                got += runner.submit(buf, len(part), start)
            got += runner.finish()
    assert s.num_classes == 101
    np.testing.assert_allclose(np.concatenate([g for _, g in got]), expected, rtol=0,
                               atol=1e-4 * np.abs(expected).max())


def test_torch_cuda_matches_cpu_and_double_buffers(torch1):
    if not torch1.cuda.is_available():
        pytest.skip("needs a CUDA device")
    net = tiny_net(torch1)
    x = clips(6, seed=3)
    expected = plain_forward(torch1, net, x)
    with open_session(copy.deepcopy(net), device="cuda") as s:
        host = s.allocate_host(2)
        assert torch1.from_numpy(host).is_pinned()
        np.testing.assert_allclose(s.run(x[:2]), expected[:2], rtol=0, atol=1e-3 * np.abs(expected).max())
        got = []
        with DoubleBuffer(s, 2) as runner:
            for start in range(0, 6, 2):
                buf = runner.acquire()
                buf[:] = x[start:start + 2]
                got += runner.submit(buf, 2, start)
            got += runner.finish()
        assert all(ms > 0 for ms in s.compute_ms)
    np.testing.assert_allclose(np.concatenate([g for _, g in got]), expected, rtol=0,
                               atol=1e-3 * np.abs(expected).max())


def raw_clips(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 16, 112, 112), dtype=np.uint8)


def host_normalised(x: np.ndarray) -> np.ndarray:
    from e3d_stream.constants import MEAN_RGB_F32

    return np.subtract(x, MEAN_RGB_F32.reshape(1, 3, 1, 1, 1), dtype=np.float32)


def test_uint8_sessions_give_the_logits_of_the_host_normalised_batch():
    x = raw_clips(3, seed=5)
    with open_session(None, backend="simulated", ms_per_clip=0.0) as u, \
            open_session(None, backend="simulated", ms_per_clip=0.0, input_dtype="float32") as f:
        assert (u.input_dtype, f.input_dtype) == ("uint8", "float32")
        np.testing.assert_array_equal(u.run(x), f.run(host_normalised(x)))
        with pytest.raises(SessionError, match="batch must be uint8"):
            u.run(host_normalised(x))


def test_torch_normalises_uint8_clips_where_the_model_runs(torch1):
    net = tiny_net(torch1)
    x = raw_clips(2, seed=9)
    with open_session(net, threads=1) as u, open_session(net, threads=1, input_dtype="float32") as f:
        assert u.input_dtype == "uint8" and u.describe()["input"]["dtype"] == "uint8"
        np.testing.assert_array_equal(u.run(x), f.run(host_normalised(x)))   # the same float32 arithmetic
