"""Real MLflow models for the tests, each saved to a local folder.

Small on purpose (a few dozen rows, a few trees) so that the suite stays fast,
but every one is a genuine MLflow model saved by its flavor's own save_model.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

SMALL_COLUMNS = ["f0", "f1", "f2"]


def small_frame(rows: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "f0": rng.normal(size=rows),
            "f1": rng.uniform(0, 10, size=rows),
            "f2": rng.integers(0, 5, size=rows).astype("int64"),
        }
    )


def small_target(frame: pd.DataFrame) -> np.ndarray:
    return (frame["f0"] * 2 + frame["f1"] - frame["f2"] * 0.5).to_numpy()


def save_xgboost(path: str) -> str:
    """XGBRegressor, signature f0: double, f1: double, f2: long (as in the protocol notes)."""
    import mlflow.xgboost
    from mlflow.models import infer_signature
    from xgboost import XGBRegressor

    frame = small_frame()
    model = XGBRegressor(n_estimators=10, max_depth=3, random_state=0)
    model.fit(frame, small_target(frame))
    mlflow.xgboost.save_model(
        model,
        path,
        signature=infer_signature(frame, model.predict(frame)),
        input_example=frame.head(3),
    )
    return path


def save_lightgbm(path: str) -> str:
    import lightgbm
    import mlflow.lightgbm
    from mlflow.models import infer_signature

    frame = small_frame()
    model = lightgbm.LGBMRegressor(n_estimators=10, min_child_samples=2, verbose=-1)
    model.fit(frame, small_target(frame))
    mlflow.lightgbm.save_model(model, path, signature=infer_signature(frame, model.predict(frame)))
    return path


def color_frame(rows: int = 40, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "color": rng.choice(["red", "green", "blue"], size=rows),
            "size": rng.uniform(0, 3, size=rows),
        }
    )


def save_sklearn_pipeline(path: str) -> str:
    """A scikit-learn pipeline with a string column: only pyfunc can serve it."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder
    from sklearn.tree import DecisionTreeRegressor

    frame = color_frame()
    target = frame["size"] * 3 + (frame["color"] == "red") * 2.0
    model = Pipeline(
        [
            (
                "encode",
                ColumnTransformer(
                    [("color", OneHotEncoder(handle_unknown="ignore"), ["color"])],
                    remainder="passthrough",
                ),
            ),
            # A tree: its answers do not depend on how requests are merged.
            ("regress", DecisionTreeRegressor(max_depth=4, random_state=0)),
        ]
    )
    model.fit(frame, target)
    mlflow.sklearn.save_model(
        model,
        path,
        signature=infer_signature(frame, model.predict(frame)),
        input_example=frame.head(5),
        serialization_format="cloudpickle",
    )
    return path


def save_sklearn_numeric(path: str) -> str:
    """A plain scikit-learn regressor on the small numeric frame (native path)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import Ridge

    frame = small_frame()
    model = Ridge().fit(frame, small_target(frame))
    mlflow.sklearn.save_model(
        model,
        path,
        signature=infer_signature(frame, model.predict(frame)),
        serialization_format="cloudpickle",
    )
    return path


def save_without_signature(path: str) -> str:
    import mlflow.sklearn
    from sklearn.linear_model import LinearRegression

    frame = small_frame()
    model = LinearRegression().fit(frame, small_target(frame))
    mlflow.sklearn.save_model(model, path, serialization_format="cloudpickle")
    return path


def save_custom_dataframe(path: str) -> str:
    """A custom pyfunc that returns a DataFrame (string and number columns)."""
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    frame = small_frame(5)
    model = _DataFrameModel()
    mlflow.pyfunc.save_model(
        path,
        python_model=model,
        signature=infer_signature(frame, model.predict(None, frame)),
    )
    return path


class _DataFrameModel:
    """Defined at module level so that cloudpickle stores it by reference."""

    def __new__(cls):
        import mlflow.pyfunc

        class DataFrameModel(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input, params=None):
                # Infinity plus -Infinity is NaN, as the conformance cases expect: not a warning.
                with np.errstate(invalid="ignore"):
                    total = model_input.sum(axis=1, numeric_only=True)
                return pd.DataFrame(
                    {
                        "total": total,
                        "label": ["big" if v > 3 else "small" for v in model_input["f1"]],
                    }
                )

        return DataFrameModel()


def build_all(root: str) -> dict[str, str]:
    builders = {
        "xgboost": save_xgboost,
        "lightgbm": save_lightgbm,
        "sklearn_pipeline": save_sklearn_pipeline,
        "sklearn_numeric": save_sklearn_numeric,
        "no_signature": save_without_signature,
        "custom_dataframe": save_custom_dataframe,
    }
    return {name: build(os.path.join(root, name)) for name, build in builders.items()}


def save_slow(path: str) -> str:
    """A custom pyfunc that sleeps ``MLSCALE_TEST_SLEEP`` seconds per call and
    appends one line per call (its row count) to the file ``MLSCALE_TEST_CALLS``."""
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    def build():
        class SlowModel(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input, params=None):
                import os
                import time

                time.sleep(float(os.environ.get("MLSCALE_TEST_SLEEP", "0")))
                calls = os.environ.get("MLSCALE_TEST_CALLS")
                if calls:
                    with open(calls, "a") as log:
                        log.write(f"{len(model_input)}\n")
                return model_input["f0"].to_numpy() * 2

        return SlowModel()

    frame = small_frame(5)
    mlflow.pyfunc.save_model(
        path,
        python_model=build(),
        signature=infer_signature(frame, frame["f0"].to_numpy() * 2),
    )
    return path
