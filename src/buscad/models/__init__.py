"""Model zoo: every architecture of the reproduced systems behind one :func:`create` factory.

``create(name, ...)`` returns an ``nn.Module`` whose forward gives a :class:`ModelOutput`; any
segmentation backbone can carry a ``dense``, ``multiscale`` or ``lesion`` (multiscale, also pooled over the
predicted lesion) classification head.
"""

from buscad.models.base import Backbone, ModelInfo, register
from buscad.models.output import ModelOutput
from buscad.models.registry import create, get_model_info, list_models

__all__ = ["Backbone", "ModelInfo", "ModelOutput", "create", "get_model_info", "list_models", "register"]
