"""Imports every architecture module so its ``@register`` runs; this order is the listing order."""

from importlib import import_module

MODULES = ("unet", "resunet", "attention", "unetpp", "nnunet", "encoders", "segnet", "fcn", "refinenet",
           "classifiers")

for _module in MODULES:
    import_module(f"buscad.models.{_module}")
