"""Model parts: plain nn.Modules, registered by name (see `create_model`)."""

from eri.models.encoders import ENCODERS
from eri.models.fusion import FUSIONS
from eri.models.model import ConfigKeyError, ERIModel, create_model

__all__ = ["ENCODERS", "FUSIONS", "ConfigKeyError", "ERIModel", "create_model"]
