"""Train and register the reference scenario's model.

``XGBRegressor(max_depth=10, min_child_weight=1, random_state=42)`` on the UCI
white wine quality data, split 70/30 with ``random_state=1``, logged to MLflow
with its parameters, metrics, signature and input example, and registered.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd

from mlscale.errors import TrainingError

TARGET = "quality"
# The features, in the data's (and so the model signature's) column order.
FEATURES = (
    "fixed acidity",
    "volatile acidity",
    "citric acid",
    "residual sugar",
    "chlorides",
    "free sulfur dioxide",
    "total sulfur dioxide",
    "density",
    "pH",
    "sulphates",
    "alcohol",
)
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def data_path() -> str:
    """The wine-quality CSV shipped inside the package."""
    return str(resources.files("mlscale.examples") / "data" / "wine-quality-white.csv")


def load_wine(path: str | None = None) -> pd.DataFrame:
    return pd.read_csv(path or data_path())


def feature_frame(path: str | None = None) -> pd.DataFrame:
    """The wine features as the model sees them (no target), floats throughout."""
    return load_wine(path).drop(columns=[TARGET]).astype("float64")


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    tracking_uri: str = DEFAULT_TRACKING_URI
    model_name: str = "wine-quality"
    experiment: str = "wine-quality"
    data: str | None = None
    n_estimators: int = 100
    max_depth: int = 10
    min_child_weight: int = 1
    random_state: int = 42
    test_size: float = 0.3
    split_random_state: int = 1


@dataclass(frozen=True)
class TrainResult:
    model_uri: str
    run_id: str
    metrics: dict[str, float]


def train(settings: TrainSettings) -> TrainResult:
    """Train, log and register the model; returns ``models:/<name>/<version>``."""
    # Imported here: they are heavy, and only training needs them.
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
    from sklearn.model_selection import train_test_split
    from xgboost import XGBRegressor

    try:
        frame = load_wine(settings.data)
    except (OSError, pd.errors.ParserError) as exc:
        raise TrainingError(f"Cannot read the training data {settings.data}: {exc}") from exc
    if TARGET not in frame.columns:
        raise TrainingError(f"The training data has no {TARGET!r} column.")
    features = frame.drop(columns=[TARGET]).astype("float64")
    target = frame[TARGET]
    x_train, x_test, y_train, y_test = train_test_split(
        features, target, test_size=settings.test_size, random_state=settings.split_random_state
    )

    params = {
        "n_estimators": settings.n_estimators,
        "max_depth": settings.max_depth,
        "min_child_weight": settings.min_child_weight,
        "random_state": settings.random_state,
    }
    model = XGBRegressor(**params)
    model.fit(x_train, y_train)
    predicted = model.predict(x_test)
    metrics = {
        "rmse": float(np.sqrt(mean_squared_error(y_test, predicted))),
        "mae": float(mean_absolute_error(y_test, predicted)),
        "r2": float(r2_score(y_test, predicted)),
    }

    # MLflow logs a warning per missing optional dependency; keep the output readable.
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        mlflow.set_tracking_uri(settings.tracking_uri)
        mlflow.set_experiment(settings.experiment)
        with mlflow.start_run() as run:
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
            info = mlflow.xgboost.log_model(
                model,
                name="model",
                signature=infer_signature(x_train, model.predict(x_train.head(50))),
                input_example=x_train.head(5),
                registered_model_name=settings.model_name,
            )
    except MlflowException as exc:
        raise TrainingError(
            f"MLflow could not log or register the model at {settings.tracking_uri}: {exc.message}"
        ) from exc
    version = info.registered_model_version
    return TrainResult(f"models:/{settings.model_name}/{version}", run.info.run_id, metrics)
