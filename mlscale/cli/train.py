"""``mlscale train``: train and register the reference scenario's model."""

from __future__ import annotations

import click


@click.command()
@click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    default="sqlite:///mlflow.db",
    show_default=True,
    help="MLflow tracking and registry store. The default is an embedded SQLite store in the "
    "working folder, which `mlflow ui` run there shows. Env: MLFLOW_TRACKING_URI.",
)
@click.option(
    "--name", "model_name", default="wine-quality", show_default=True, help="Registered model name."
)
@click.option("--experiment", default="wine-quality", show_default=True, help="Experiment name.")
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A wine-quality CSV with a 'quality' column (default: the copy shipped with mlscale).",
)
def train(tracking_uri: str, model_name: str, experiment: str, data: str | None) -> None:
    """Train and register the reference scenario's model.

    XGBRegressor(max_depth=10, min_child_weight=1, random_state=42) on the UCI white
    wine quality data, split 70/30 with random_state=1, logged with its params,
    metrics (rmse, mae, r2), signature and input example. The last line of output is
    the registered model URI, models:/<name>/<version>.
    """
    # heavy: the training example imports xgboost, pandas and mlflow (0.7 s); only
    # `train` needs them, and `mlscale --help` must not pay for them.
    from mlscale.examples.wine import TrainSettings
    from mlscale.examples.wine import train as run_training

    settings = TrainSettings(
        tracking_uri=tracking_uri, model_name=model_name, experiment=experiment, data=data
    )
    click.echo(f"Training on {data or 'the bundled wine-quality data'}; tracking: {tracking_uri}", err=True)
    result = run_training(settings)
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items())
    click.echo(f"Run {result.run_id}: {metrics}", err=True)
    click.echo(result.model_uri)
