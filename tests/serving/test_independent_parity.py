"""The parity gate compares independent implementations: the torch reference scorer (no kernels)
against the online scorer (numpy and the native kernels). A kernel broken on purpose makes
`snn validate --compare` fail with exit 3."""

import shutil

import pytest

from snn.pipeline import native
from snn.pipeline.native import loader

from ..conftest import ADULT_DIR, invoke

BREAKS = {
    "wrong-sign": ("y[c] += weight * w[c];", "y[c] -= weight * w[c];"),
    "one-entry-dropped": (
        "for (int64_t f = 0; f < fields; ++f) {\n            const int64_t e = r * fields + f, id",
        "for (int64_t f = 1; f < fields; ++f) {\n            const int64_t e = r * fields + f, id",
    ),
}


@pytest.mark.skipif(loader.compiler() is None, reason="no C compiler: there is no kernel to break")
@pytest.mark.parametrize("how", [None, *BREAKS])
def test_a_broken_kernel_fails_parity(how, runner, small_run, tmp_path, monkeypatch):
    sources = tmp_path / "csrc"
    shutil.copytree(loader.CSRC, sources)
    if how is not None:
        old, new = BREAKS[how]
        text = (sources / "online.c").read_text()
        assert text.count(old) == 1
        (sources / "online.c").write_text(text.replace(old, new))
    monkeypatch.setattr(loader, "CSRC", sources)
    monkeypatch.setenv("SNN_NATIVE_CACHE", str(tmp_path / "built"))
    native.forget_libraries()
    try:
        bundle = small_run.parent / ".snn" / "bundles" / "adult-income"
        online = tmp_path / "online.parquet"
        predicted = invoke(
            runner, "predict", bundle, ADULT_DIR / "adult.test", "-o", online, "--online", "--rows", "0:1500"
        )
        assert predicted.exit_code == 0, predicted.stderr
        assert list((tmp_path / "built").glob("snn_kernels_*.so")), "the (broken) kernel was not the one that ran"
        result = invoke(runner, "validate", small_run, "--compare", online)
    finally:
        native.forget_libraries()
    if how is None:
        assert result.exit_code == 0, result.stderr
    else:
        assert result.exit_code == 3, result.stderr
        assert "parity: " in result.stderr and "rows differ" in result.stderr
