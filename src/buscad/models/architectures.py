"""Imports every architecture module so its ``@register`` runs (one import line per module)."""

from buscad.models import unet  # noqa: F401
