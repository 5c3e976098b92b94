"""The ais_bench backend against the in-test stand-in (tests/fake_ais_bench).

Truth: the stand-in's "model" is ``per-channel mean @ W + b`` with W and b
returned by ``write_model``; the tests compute that with numpy themselves.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from e3d_stream.errors import BackendUnavailableError, ConfigError, SessionError
from e3d_stream.sessions import DoubleBuffer, open_session

FAKE = Path(__file__).resolve().parent / "fake_ais_bench"


def _forget_modules(monkeypatch):
    for name in list(sys.modules):
        if name == "ais_bench" or name.startswith("ais_bench.") or name == "e3d_stream.sessions._aisbench":
            monkeypatch.delitem(sys.modules, name)


@pytest.fixture
def fake_ais(monkeypatch):
    """Put the stand-in ``ais_bench`` on sys.path for one test."""
    _forget_modules(monkeypatch)
    monkeypatch.syspath_prepend(str(FAKE))
    from make_model import write_model  # tests/fake_ais_bench/make_model.py

    return write_model


def truth(batch, params):
    return batch.mean(axis=(2, 3, 4), dtype=np.float64) @ params["weight"] + params["bias"]


def clips(n, seed=0):
    return np.random.default_rng(seed).uniform(-110, 140, (n, 3, 16, 112, 112)).astype(np.float32)


def test_static_om_logits_match_numpy(fake_ais, tmp_path):
    params = fake_ais(tmp_path / "m.om", input_shape=(4, 3, 16, 112, 112), num_classes=7)
    with open_session(tmp_path / "m.om") as session:
        got = (session.backend, session.device, session.fixed_batch, session.num_classes)
        assert got == ("ais_bench", "npu:0", 4, 7)
        assert session.input_spec.name == "image" and session.input_spec.dtype == "float32"
        x = clips(4)
        np.testing.assert_allclose(session.run(x), truth(x, params), rtol=1e-5, atol=1e-4)
        # a short last batch is padded to the static 4 (the stand-in refuses other sizes)
        np.testing.assert_allclose(session.run(x[:3]), truth(x[:3], params), rtol=1e-5, atol=1e-4)
        assert len(session.compute_ms) == 2


def test_upload_stages_a_device_copy(fake_ais, tmp_path):
    params = fake_ais(tmp_path / "m.om", input_shape=(2, 3, 16, 112, 112))
    with open_session(tmp_path / "m.om", device="npu:1") as session:
        x = clips(2, seed=3)
        host = x.copy()
        staged = session.upload(host)
        assert staged.reads_host is False and staged.payload.on_device and staged.payload.device_id == 1
        host[:] = np.nan  # the host buffer is free once upload returned
        np.testing.assert_allclose(session.execute(staged, 2), truth(x, params), rtol=1e-5, atol=1e-4)


def test_compute_time_comes_from_exec_time_list(fake_ais, tmp_path, monkeypatch):
    fake_ais(tmp_path / "m.om", input_shape=(2, 3, 16, 112, 112))
    with open_session(tmp_path / "m.om") as session:
        inner = session._session
        real_infer = inner.infer
        times = iter([3.25, 7.5])

        def infer(feeds, mode="static"):
            assert mode == "static"
            out = real_infer(feeds, mode=mode)
            inner.summary().exec_time_list[-1] = next(times)  # what the NPU reported
            return out

        monkeypatch.setattr(inner, "infer", infer)
        session.run(clips(2))
        session.run(clips(1))
        assert session.compute_ms == [3.25, 7.5]
        assert inner.summary().exec_time_list == []  # reset after each read: no unbounded growth


def test_double_buffer_stages_in_caller_and_infers_in_device_thread(fake_ais, tmp_path):
    params = fake_ais(tmp_path / "m.om", input_shape=(4, 3, 16, 112, 112))
    x = clips(10, seed=5)
    with open_session(tmp_path / "m.om", batch_size=4) as session:
        got = {}
        with DoubleBuffer(session, 4) as runner:
            for start in range(0, 10, 4):
                buf = runner.acquire()
                part = x[start:start + 4]
                buf[:len(part)] = part
                buf[len(part):] = 0
                got.update(runner.submit(buf, len(part), start))
            got.update(runner.finish())
        calls = session._session.calls
    assert sorted(got) == [0, 4, 8] and got[8].shape == (2, 7)
    np.testing.assert_allclose(np.concatenate([got[0], got[4], got[8]]), truth(x, params), rtol=1e-5, atol=1e-4)
    assert {t for c, t in calls if c == "to_device"} == {"MainThread"}
    assert {t for c, t in calls if c == "infer"} == {"e3d-device"}


def test_host_staging_fallback(fake_ais, tmp_path):
    params = fake_ais(tmp_path / "m.om", input_shape=(2, 3, 16, 112, 112))
    with open_session(tmp_path / "m.om", staging="host") as session:
        x = clips(2, seed=9)
        staged = session.upload(x)
        assert staged.reads_host and isinstance(staged.payload, np.ndarray)
        np.testing.assert_allclose(session.execute(staged, 2), truth(x, params), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape, dtype, match", [
    ((-1, 3, 16, 112, 112), "float32", "dynamic batch"),
    ((4, 3, 8, 112, 112), "float32", r"expected \(N, 3, 16, 112, 112\)"),
    ((4, 3, 16, 112, 112), "float16", "expected one of float32, uint8"),
])
def test_unfit_models_are_refused_up_front(fake_ais, tmp_path, shape, dtype, match):
    fake_ais(tmp_path / "m.om", input_shape=shape, input_dtype=dtype)
    with pytest.raises(ConfigError, match=match):
        open_session(tmp_path / "m.om")


def test_option_errors(fake_ais, tmp_path):
    fake_ais(tmp_path / "m.om", input_shape=(4, 3, 16, 112, 112))
    with pytest.raises(ConfigError, match="static batch of 4"):
        open_session(tmp_path / "m.om", batch_size=16)
    with pytest.raises(ConfigError, match="'npu' or 'npu:N'"):
        open_session(tmp_path / "m.om", device="cpu")
    with pytest.raises(ConfigError, match="staging 'gpu'"):
        open_session(tmp_path / "m.om", staging="gpu")
    (tmp_path / "bad.om").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="cannot load"):
        open_session(tmp_path / "bad.om")


def test_inference_errors_are_session_errors(fake_ais, tmp_path):
    fake_ais(tmp_path / "m.om", input_shape=(2, 3, 16, 112, 112))
    session = open_session(tmp_path / "m.om")
    staged = session.upload(clips(2))
    session._session.free_resource()
    with pytest.raises(SessionError, match="inference failed"):
        session.execute(staged, 2)
    session.close()
    session.close()  # idempotent
    with pytest.raises(SessionError, match="closed"):
        session.run(clips(2))


def test_describe_says_unverified(fake_ais, tmp_path):
    fake_ais(tmp_path / "m.om", input_shape=(2, 3, 16, 112, 112))
    with open_session(tmp_path / "m.om") as session:
        info = session.describe()
    assert info["backend"] == "ais_bench" and info["verified_on_hardware"] is False
    assert info["fixed_batch"] == 2 and info["model_path"].endswith("m.om")


def test_stand_in_mirrors_the_real_mode_check(fake_ais, tmp_path):
    fake_ais(tmp_path / "m.om", input_shape=(1, 3, 16, 112, 112))
    from ais_bench.infer.interface import InferSession

    session = InferSession(0, str(tmp_path / "m.om"))
    x = clips(1)
    assert isinstance(session.infer([x], mode="static")[0], np.ndarray)
    with pytest.raises(RuntimeError, match="wrong infer_mode"):
        session.infer([x], mode="dynbatch")  # the docs' spelling is rejected by the code
    with pytest.raises(RuntimeError, match="invalid"):
        session.infer([SimpleNamespace()], mode="static")
    assert str(session.get_inputs()[0].datatype) == "dtype.float32"


def test_missing_ais_bench_names_where_it_comes_from(monkeypatch, tmp_path):
    _forget_modules(monkeypatch)
    monkeypatch.setitem(sys.modules, "ais_bench", None)  # as if not installed
    (tmp_path / "m.om").write_bytes(b"x")
    with pytest.raises(BackendUnavailableError, match="not on PyPI.*gitee.com/ascend/tools"):
        open_session(tmp_path / "m.om")
