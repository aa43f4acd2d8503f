"""The native sparse-linear kernel equals the torch path, refuses bad input, and is optional."""

import sysconfig
from pathlib import Path

import pytest
import torch

from snn.pipeline import native
from snn.pipeline.model import SparseLinear, SparseNN
from snn.pipeline.spec import ModelSpec

needs_compiler = pytest.mark.skipif(native.compiler() is None, reason="no C compiler: the native kernel cannot be built")


def _layer(num_ids: int, width: int, act: str = "none", seed: int = 0) -> SparseLinear:
    torch.manual_seed(seed)
    layer = SparseLinear(num_ids, width, act).eval()
    with torch.no_grad():
        layer.max_abs.uniform_(0.0, 2.0)
        layer.max_abs[::7] = 0.0  # ids never seen in training: v / |v|
        layer.id_bias.normal_(std=0.3)
        layer.bias.normal_()
    return layer


def _csr(num_ids: int, lengths: list[int], seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    nnz = sum(lengths)
    ids = torch.randint(0, num_ids, (nnz,), generator=g)
    values = torch.randn(nnz, generator=g) * 2  # beyond max_abs too: clipped to ±1
    values[::11] = 0.0
    offsets = torch.tensor([0] + lengths[:-1]).cumsum(0)
    return ids, values, offsets


@pytest.fixture(params=[1, 2, 4], ids=lambda n: f"{n}threads")
def threads(request):
    """torch's thread count, which the kernel takes as its own, restored after the test."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@needs_compiler
@pytest.mark.parametrize("width", [1, 3, 8, 50, 64, 70, 150])
@pytest.mark.parametrize("lengths", [
    [5], [0, 4, 0, 9, 1],
    [40] * 300,  # crosses the threaded size: rows over the threads
    [600], [0, 300], [300, 7],  # fewer rows than threads: each row's entries split over them
])
def test_kernel_equals_the_torch_path(width, lengths, threads):
    layer = _layer(1000, width)
    ids, values, offsets = _csr(1000, lengths)
    with torch.no_grad():
        expected = layer.pool(ids, layer.scaled(ids, values), offsets)
        fused = native.sparse_linear(ids, values, offsets, layer.weight, layer.max_abs, layer.id_bias, layer.bias)
    assert fused is not None, "the kernel did not build"
    assert fused.shape == (len(lengths), width)
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-5)


@needs_compiler
@pytest.mark.parametrize("act", ["relu", "sigmoid", "prelu"])
def test_eval_forward_uses_the_kernel_and_keeps_the_activation(act, monkeypatch):
    layer = _layer(300, 20, act)
    ids, values, offsets = _csr(300, [30] * 12)
    with torch.inference_mode():
        expected = layer.pool(ids, layer.scaled(ids, values), offsets)
        calls = []
        kernel = native.sparse_linear
        monkeypatch.setattr(native, "sparse_linear", lambda *args: calls.append(1) or kernel(*args))
        got = layer(ids, values, offsets)
    assert calls == [1]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@needs_compiler
def test_model_inference_uses_the_kernel_and_equals_the_torch_path(monkeypatch):
    torch.manual_seed(0)
    model = SparseNN(500, 10, ModelSpec.model_validate({"sparse_linear": {"width": 12}, "mlp": {"layers": [8]}})).eval()
    with torch.no_grad():
        model.sparse.max_abs.uniform_(0.0, 2.0)
        model.sparse.id_bias.normal_(std=0.3)
    ids, values, offsets = _csr(500, [10] * 40)
    calls = []
    kernel = native.sparse_linear
    monkeypatch.setattr(native, "sparse_linear", lambda *args: calls.append(1) or kernel(*args))
    with torch.inference_mode():
        fused = model(ids, values, offsets)
        monkeypatch.setattr(native, "sparse_linear", lambda *args: None)  # the torch path
        expected = model(ids, values, offsets)
    assert calls == [1]
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-5)


def test_training_and_autograd_keep_the_torch_path(monkeypatch):
    monkeypatch.setattr(native, "sparse_linear", lambda *args: pytest.fail("kernel used where gradients flow"))
    layer = _layer(100, 4)
    ids, values, offsets = _csr(100, [6] * 5)
    layer(ids, values, offsets).sum().backward()  # eval mode, grad enabled
    assert layer.weight.grad is not None
    layer.train()
    with torch.no_grad():
        layer(ids, values, offsets)


@needs_compiler
@pytest.mark.parametrize("bad", [-1, 1000])
@pytest.mark.parametrize("lengths", [[10, 10, 10], [600]])  # the second split over threads
def test_out_of_range_ids_raise_instead_of_reading_memory(bad, lengths, threads):
    layer = _layer(1000, 8)
    ids, values, offsets = _csr(1000, lengths)
    ids[-17] = bad
    with torch.inference_mode(), pytest.raises(IndexError, match=r"outside \[0, 1000\)"):
        layer(ids, values, offsets)


@needs_compiler
@pytest.mark.parametrize("offsets", [[0, 20, 10], [301, 0], [-1]])
def test_offsets_out_of_order_raise(offsets, threads):
    layer = _layer(100, 8)
    ids, values, _ = _csr(100, [150, 150])
    with torch.inference_mode(), pytest.raises(IndexError, match="non-decreasing row starts"):
        layer(ids, values, torch.tensor(offsets))


def test_other_dtypes_and_layouts_fall_back():
    layer = _layer(100, 8).double()
    ids, values, offsets = _csr(100, [6] * 4)
    values = values.double()
    assert native.sparse_linear(ids, values, offsets, layer.weight, layer.max_abs, layer.id_bias, layer.bias) is None
    strided = torch.stack([values.float(), values.float()], 1)[:, 0]
    layer = _layer(100, 8)
    assert native.sparse_linear(ids, strided, offsets, layer.weight, layer.max_abs, layer.id_bias, layer.bias) is None
    with torch.inference_mode():
        torch.testing.assert_close(layer(ids, strided, offsets), layer.pool(ids, layer.scaled(ids, strided), offsets))


def test_without_a_compiler_the_layer_keeps_working(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SNN_NATIVE_CACHE", str(tmp_path / "native"))
    monkeypatch.setenv("CC", "/bin/false")
    native.forget_libraries()
    try:
        assert native.torch_library() is None and native.library() is None and native.python_library() is None
        assert "native kernels torch_kernels unavailable" in caplog.text
        layer = _layer(100, 8)
        ids, values, offsets = _csr(100, [6] * 4)
        with torch.inference_mode():
            torch.testing.assert_close(layer(ids, values, offsets), layer.pool(ids, layer.scaled(ids, values), offsets))
    finally:
        native.forget_libraries()


@needs_compiler
def test_the_library_is_built_once_into_the_cache(tmp_path, monkeypatch):
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        pytest.skip("no Python headers: the records kernel cannot be built")
    monkeypatch.setenv("SNN_NATIVE_CACHE", str(tmp_path))
    native.forget_libraries()
    try:
        libraries = (native.library, native.python_library, native.torch_library)
        assert all(load() is not None for load in libraries)
        first = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
        native.forget_libraries()
        assert all(load() is not None for load in libraries)
        assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == first  # loaded, not rebuilt
        built = sorted(p.name.rsplit("_", 1)[0] for p in tmp_path.glob("snn_*.so"))
        assert built == ["snn_kernels", "snn_python_kernels", "snn_torch_kernels"]
        assert len(list(tmp_path.iterdir())) == 3  # no scratch left
    finally:
        native.forget_libraries()


@needs_compiler
@pytest.mark.parametrize("model_spec", [
    {"sparse_linear": {"width": 12}, "mlp": {"layers": [8]}},
    {"sparse_linear": {"width": 12, "activation": "tanh"}, "interactions": {"dim": 5}, "mlp": {"layers": [8]}},
])
def test_float64_inference_runs_the_online_kernels_and_equals_the_torch_path(model_spec, monkeypatch):
    torch.manual_seed(0)
    model = SparseNN(500, 10, ModelSpec.model_validate(model_spec)).double().eval()
    with torch.no_grad():
        model.sparse.max_abs.uniform_(0.0, 2.0)
        model.sparse.id_bias.normal_(std=0.3)
    ids, values, offsets = _csr(500, [10] * 40)
    values = values.double()
    calls = []
    for name in ("sparse_rows_f64", "dot_pairs_f64"):
        kernel = getattr(native, name)
        monkeypatch.setattr(native, name, lambda *args, kernel=kernel, name=name: calls.append(name) or kernel(*args))
    with torch.inference_mode():
        fused = model(ids, values, offsets)
        for name in ("sparse_rows_f64", "dot_pairs_f64"):
            monkeypatch.setattr(native, name, lambda *args: None)  # the torch path
        expected = model(ids, values, offsets)
    assert calls == (["sparse_rows_f64", "dot_pairs_f64"] if "interactions" in model_spec else ["sparse_rows_f64"])
    torch.testing.assert_close(fused, expected, rtol=1e-12, atol=1e-12)


@needs_compiler
def test_float64_rows_of_unequal_length_keep_the_torch_path(monkeypatch):
    layer = _layer(100, 6).double()
    ids, values, offsets = _csr(100, [4, 0, 7, 4])
    monkeypatch.setattr(native, "sparse_rows_f64", lambda *args: pytest.fail("the kernel takes equal rows only"))
    with torch.inference_mode():
        got = layer(ids, values.double(), offsets)
    torch.testing.assert_close(got, layer.pool(ids, layer.scaled(ids, values.double()), offsets))
