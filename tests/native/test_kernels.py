"""Each kernel equals its reference (the function it sits beside in native/), refuses bad input
rather than read outside its arrays, and is optional: `SNN_NATIVE=0` or no compiler leaves every
caller working on the references."""

import math
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from snn.pipeline import native
from snn.pipeline.model.blocks.base import IdSpace
from snn.pipeline.model.network import Network
from snn.pipeline.model.plan import ModelSpec, plan_for
from snn.pipeline.native import loader, records, scoring
from snn.pipeline.native import sparse_linear as f32

needs_compiler = pytest.mark.skipif(loader.compiler() is None, reason="no C compiler: the kernels cannot be built")


def _tables(num_ids: int, width: int, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(num_ids, width, generator=g, dtype=dtype)
    max_abs = torch.rand(num_ids, generator=g, dtype=dtype) * 2
    max_abs[::7] = 0.0  # ids never seen in training: v / |v|
    id_bias = torch.randn(num_ids, 1, generator=g, dtype=dtype) * 0.3
    bias = torch.randn(width, generator=g, dtype=dtype)
    return weight, max_abs, id_bias, bias


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
@pytest.mark.parametrize(
    "lengths",
    [
        [5],
        [0, 4, 0, 9, 1],
        [40] * 300,  # crosses the threaded size: rows over the threads
        [600],
        [0, 300],
        [300, 7],  # fewer rows than threads: each row's entries split over them
    ],
)
def test_float32_kernel_equals_its_reference(width, lengths, threads):
    tables = _tables(1000, width)
    ids, values, offsets = _csr(1000, lengths)
    assert loader.torch_library() is not None, "the kernel did not build"
    fused = f32.sparse_linear_f32(ids, values, offsets, *tables)
    assert fused.shape == (len(lengths), width)
    torch.testing.assert_close(fused, f32.sparse_linear_reference(ids, values, offsets, *tables), rtol=1e-5, atol=1e-5)


def _network(spec: dict, num_ids: int = 500, fields: int = 10) -> Network:
    torch.manual_seed(0)
    network = Network(plan_for(ModelSpec.model_validate(spec), IdSpace(num_ids, fields))).eval()
    with torch.no_grad():
        network.block_weights("sparse")["max_abs"].uniform_(0.0, 2.0)
        network.block_weights("sparse")["id_bias"].normal_(std=0.3)
    return network


@needs_compiler
@pytest.mark.parametrize(
    "spec, kernel_runs",
    [
        ({"sparse_linear": {"width": 12, "activation": "prelu"}, "mlp": {"layers": [8]}}, True),
        ({"sparse_linear": {"width": 6}, "interactions": {"dim": 3}, "mlp": {"layers": [4]}}, False),  # reads `scaled`
    ],
)
def test_inference_runs_the_float32_kernel_where_only_the_output_is_read(spec, kernel_runs, monkeypatch):
    network = _network(spec)
    ids, values, offsets = _csr(500, [10] * 40)
    calls = []
    monkeypatch.setattr(f32, "sparse_linear_f32", lambda *a, k=f32.sparse_linear_f32: calls.append(1) or k(*a))
    fast = network.infer(ids, values, offsets, 10)
    with torch.no_grad():
        reference = network(ids, values, offsets, 10)
    assert calls == ([1] if kernel_runs else [])
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)


def test_training_and_the_reference_scorer_never_run_a_kernel(monkeypatch):
    monkeypatch.setattr(f32, "sparse_linear_f32", lambda *args: pytest.fail("a kernel ran outside inference"))
    network = _network({"sparse_linear": {"width": 4}, "mlp": {"layers": []}}, 100, 6)
    ids, values, offsets = _csr(100, [6] * 5)
    network.train()
    network(ids, values, offsets, 6).sum().backward()
    network.eval()
    with torch.no_grad():
        network.double()(ids, values.double(), offsets, 6)


@needs_compiler
@pytest.mark.parametrize("bad", [-1, 1000])
@pytest.mark.parametrize("lengths", [[10, 10, 10], [600]])  # the second split over threads
def test_out_of_range_ids_raise_instead_of_reading_memory(bad, lengths, threads):
    ids, values, offsets = _csr(1000, lengths)
    ids[-17] = bad
    with pytest.raises(IndexError, match=r"outside \[0, 1000\)"):
        f32.sparse_linear_f32(ids, values, offsets, *_tables(1000, 8))


@needs_compiler
@pytest.mark.parametrize("offsets", [[0, 20, 10], [301, 0], [-1]])
def test_offsets_out_of_order_raise(offsets, threads):
    ids, values, _ = _csr(100, [150, 150])
    with pytest.raises(IndexError, match="non-decreasing row starts"):
        f32.sparse_linear_f32(ids, values, torch.tensor(offsets), *_tables(100, 8))


def test_other_dtypes_and_layouts_take_the_reference():
    ids, values, offsets = _csr(100, [6] * 4)
    tables = _tables(100, 8, torch.float64)
    torch.testing.assert_close(
        f32.sparse_linear_f32(ids, values.double(), offsets, *tables),
        f32.sparse_linear_reference(ids, values.double(), offsets, *tables),
    )
    strided = torch.stack([values, values], 1)[:, 0]
    tables = _tables(100, 8)
    torch.testing.assert_close(
        f32.sparse_linear_f32(ids, strided, offsets, *tables),
        f32.sparse_linear_reference(ids, strided, offsets, *tables),
    )


def _request(n=64, fields=9, num_ids=300, seed=2):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, num_ids, (n, fields))
    values = rng.normal(size=(n, fields)) * 2
    values[:, ::3] = 1.0
    table, max_abs = rng.normal(size=(num_ids, 16)), rng.uniform(0, 2, num_ids)
    return ids, values, table, max_abs, rng.normal(size=num_ids) * 0.3, rng.normal(size=16)


@needs_compiler
def test_float64_serving_kernels_equal_their_references():
    ids, values, table, max_abs, id_bias, bias = _request()
    assert loader.library() is not None
    scaled, sums = scoring.sparse_sums(ids, values, table, max_abs, id_bias, bias)
    ref_scaled, ref_sums = scoring.sparse_sums_reference(ids, values, table, max_abs, id_bias, bias)
    assert np.abs(scaled - ref_scaled).max() <= 1e-15 and np.abs(sums - ref_sums).max() <= 1e-12
    g0 = np.random.default_rng(3).normal(size=(len(ids), 8))
    vectors = table[:, :8].copy()
    pairs = scoring.dot_pairs(g0, vectors, ids, scaled)
    assert pairs.shape == (len(ids), 10 * 9 // 2)
    assert np.abs(pairs - scoring.dot_pairs_reference(g0, vectors, ids, scaled)).max() <= 1e-12


@pytest.mark.parametrize("bad", [-1, 300])
def test_float64_kernels_and_references_refuse_outside_ids(bad):
    ids, values, table, max_abs, id_bias, bias = _request()
    ids[5, 2] = bad
    for sums in (scoring.sparse_sums, scoring.sparse_sums_reference):
        with pytest.raises(IndexError, match=r"outside \[0, 300\)"):
            sums(ids, values, table, max_abs, id_bias, bias)
    for pairs in (scoring.dot_pairs, scoring.dot_pairs_reference):
        with pytest.raises(IndexError, match=r"outside \[0, 300\)"):
            pairs(np.zeros((len(ids), 16)), table, ids, np.ones(ids.shape))


def test_the_request_reader_equals_its_reference():
    records_ = [
        {"a": 1, "b": 2.5, "c": True, "d": "x"},
        {"a": None, "b": np.float64(3), "c": False},
        {"a": 2**60, "b": -0.0, "c": 1, "d": [1]},
        {"a": 10**400, "b": float("nan"), "d": None},
    ]
    names = ("a", "b", "c", "d", "missing")
    numbers, seen = records.records_to_numbers(records_, names)
    ref_numbers, ref_seen = records.records_to_numbers_reference(records_, names)
    np.testing.assert_array_equal(numbers, ref_numbers)
    assert seen.tolist() == ref_seen.tolist()
    assert ref_seen.tolist() == [
        records.SEEN_INT | records.SEEN_NONE | records.SEEN_BIG,
        records.SEEN_FLOAT,
        records.SEEN_BOOL | records.SEEN_INT | records.SEEN_NONE,
        records.SEEN_OTHER | records.SEEN_NONE,
        records.SEEN_NONE,
    ]
    assert ref_numbers[0, 3] == math.inf and math.isnan(ref_numbers[3, 0])


@pytest.mark.parametrize("how", ["SNN_NATIVE=0", "no compiler"])
def test_every_caller_keeps_working_without_the_kernels(how, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SNN_NATIVE_CACHE", str(tmp_path / "native"))
    if how == "SNN_NATIVE=0":
        monkeypatch.setenv("SNN_NATIVE", "0")
    else:
        monkeypatch.setenv("CC", "/bin/false")
    native.forget_libraries()
    try:
        assert loader.torch_library() is None and loader.library() is None and loader.python_library() is None
        if how == "no compiler":
            assert "native kernels torch_kernels unavailable" in caplog.text
        network = _network({"sparse_linear": {"width": 8}, "mlp": {"layers": [4]}}, 100, 6)
        ids, values, offsets = _csr(100, [6] * 4)
        with torch.no_grad():
            torch.testing.assert_close(network.infer(ids, values, offsets, 6), network(ids, values, offsets, 6))
        request = _request()
        assert np.array_equal(scoring.sparse_sums(*request)[1], scoring.sparse_sums_reference(*request)[1])
        assert records.records_to_numbers([{"a": 1}], ("a",))[0].tolist() == [[1.0]]
    finally:
        native.forget_libraries()


@needs_compiler
def test_the_libraries_are_built_once_into_the_cache(tmp_path, monkeypatch):
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        pytest.skip("no Python headers: the records kernel cannot be built")
    monkeypatch.setenv("SNN_NATIVE_CACHE", str(tmp_path))
    native.forget_libraries()
    try:
        libraries = (loader.library, loader.python_library, loader.torch_library)
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
