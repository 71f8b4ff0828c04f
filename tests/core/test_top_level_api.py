"""The top-level API: every advertised name resolves, lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

import fuse4seg


@pytest.mark.parametrize("name", [n for n in fuse4seg.__all__ if n != "__version__"])
def test_every_public_name_resolves_to_its_module_object(name):
    value = getattr(fuse4seg, name)
    assert callable(value)
    assert value.__module__ == fuse4seg._API[name]


def test_from_import_and_unknown_name():
    from fuse4seg import Predictor, load_model_file

    assert Predictor.__name__ == "Predictor" and load_model_file.__name__ == "load_model_file"
    with pytest.raises(AttributeError, match="no_such_thing"):
        fuse4seg.no_such_thing  # noqa: B018


def test_import_fuse4seg_does_not_import_torch():
    code = "import sys, fuse4seg; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
