"""The one list of plugin packages: sub-systems that register themselves when imported.

fuse4seg's registries live in the layer that owns the concept and know nothing of their
plugins:

* :mod:`fuse4seg.models.model_file`: segmentation archs, fusion archs and model-file loaders
  (``register_seg_arch``, ``register_fusion_arch``, ``register_model_loader``);
* :mod:`fuse4seg.train.methods`: training methods (``register_method``).

A plugin package registers its entries at import time (``register_...`` calls at module
level). A registry imports the packages below by name, once, the first time it is asked for
a name it does not know (or for its whole list), so a model file or ``--method`` of any
plugin works without the caller importing the plugin, and no module imports a package of a
higher layer (see ``docs/architecture.md`` and ``tests/test_layers.py``).

A new method or architecture package adds its module name here.
"""

from __future__ import annotations

import importlib

__all__ = ["PLUGINS", "load_plugins"]

#: modules that register methods, architectures or model-file loaders when imported
PLUGINS: tuple[str, ...] = (
    "fuse4seg.train.rule_methods",  # rule-<name> methods (classical fusion rule + follower)
    "fuse4seg.v1",  # fuse4seg-v1 method, FusionNetV1 fusion arch
    "fuse4seg.rmr",  # rmr3d model-file loader (3D RMR-Fusion)
)

_state = {"loaded": False}


def load_plugins() -> None:
    """Import every module of :data:`PLUGINS` (once; re-entrant calls during the imports
    return at once)."""
    if _state["loaded"]:
        return
    _state["loaded"] = True
    try:
        for name in PLUGINS:
            importlib.import_module(name)
    except BaseException:
        _state["loaded"] = False  # a failed import is retried (and reported) next time
        raise
