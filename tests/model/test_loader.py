"""Which path serves each kind of model, and how load failures read."""

from __future__ import annotations

import os
import shutil

import pytest

from mlscale.errors import ModelLoadError
from mlscale.serving.loading import load_model


@pytest.mark.parametrize(
    ("name", "path", "merges"),
    [
        ("xgboost", "native (xgboost C API, dense)", True),
        ("lightgbm", "native (lightgbm LGBMRegressor.predict)", True),
        # Merged only where this CPU's BLAS sums merged calls exactly (test_predict_batch).
        ("sklearn_numeric", "native (sklearn Ridge.predict, column-major)", None),
        ("sklearn_pipeline", "pyfunc (the signature is not all named numeric columns)", True),
        ("custom_dataframe", "pyfunc (no native path: flavor 'mlflow.pyfunc.model'", True),
        ("no_signature", "pyfunc (the signature is not all named numeric columns)", False),
    ],
)
def test_each_model_gets_the_path_it_can_prove(model_paths, name, path, merges):
    model = load_model(model_paths[name])
    assert model.path_description.startswith(path)
    if merges is not None:
        assert (model.native_batchable if model.native else model.pyfunc_batchable) is merges


def test_the_native_path_can_be_switched_off(model_paths):
    model = load_model(model_paths["xgboost"], native=False)
    assert model.native is None
    assert model.path_description == "pyfunc (native path switched off)"


def test_a_corrupt_artifact_is_named(model_paths, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model_paths["xgboost"], broken)
    (broken / "model.ubj").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError) as error:
        load_model(str(broken))
    message = str(error.value)
    assert message.startswith(f"Cannot load model {str(broken)!r}")
    assert "may be corrupt" in message


def test_a_folder_that_is_not_a_model_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="is not an MLflow model: there is no MLmodel file"):
        load_model(str(tmp_path))


def test_a_missing_local_path_is_named(tmp_path):
    missing = os.path.join(tmp_path, "nowhere")
    with pytest.raises(ModelLoadError, match="Cannot resolve model"):
        load_model(missing)
