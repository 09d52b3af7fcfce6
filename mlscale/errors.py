"""The exceptions mlscale raises, one hierarchy for every subsystem.

Third-party exceptions are translated at the boundary (``raise X(...) from exc``)
so that callers, and the command line, only ever handle these. The command line
turns any of them into its message and ``exit_code`` in one place
(``mlscale.cli.main``); the scoring server turns ``ServingError`` (in
``mlscale.protocol.errors``) into MLflow's error JSON and its HTTP status.
"""


class MlscaleError(Exception):
    """Base class of every error mlscale raises on purpose.

    The message is written for the person at the terminal: it says what went
    wrong and what to do about it. ``exit_code`` is the command line's exit status
    when the error ends a command; a subclass that means something else sets its own.
    """

    exit_code: int = 1


class ConfigurationError(MlscaleError):
    """A flag, an environment variable or a settings value is invalid."""


class ModelLoadError(MlscaleError):
    """The model URI cannot be resolved, downloaded or loaded."""


class TrainingError(MlscaleError):
    """The example model could not be trained or registered."""


class ContainerError(MlscaleError):
    """A container engine is missing, or an image build or container run failed."""
