"""The exceptions mlscale raises, one hierarchy for every subsystem.

Third-party exceptions are translated at the boundary (``raise X(...) from exc``)
so that callers, and the command line, only ever handle these.
"""


class MlscaleError(Exception):
    """Base class of every error mlscale raises on purpose.

    The message is written for the person at the terminal: it says what went
    wrong and what to do about it.
    """


class ConfigurationError(MlscaleError):
    """A flag, an environment variable or a settings value is invalid."""


class ModelLoadError(MlscaleError):
    """The model URI cannot be resolved, downloaded or loaded."""


class TrainingError(MlscaleError):
    """The example model could not be trained or registered."""


class ContainerError(MlscaleError):
    """A container engine is missing, or an image build or container run failed."""
