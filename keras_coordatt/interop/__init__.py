"""Adapters that hand the package's networks to other Keras libraries.

Each submodule imports its optional dependency itself (``keras_coordatt.interop.keras_hub``
needs the ``[keras-hub]`` extra); importing this package imports none of them.
"""
