"""Model parts: plain nn.Modules, registered by name (see `create_model`)."""

from eri.models.encoders import ENCODERS
from eri.models import e2e  # noqa: F401, E402  (registers mma_rnn: paper 000 end to end)
from eri.models.fusion import FUSIONS
from eri.models.model import ERIModel, create_model

__all__ = ["ENCODERS", "FUSIONS", "ERIModel", "create_model"]
