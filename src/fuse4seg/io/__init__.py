"""File helpers shared by all commands (atomic writes)."""

from fuse4seg.io.atomic import atomic_path, save_json_atomic, save_torch_atomic

__all__ = ["atomic_path", "save_json_atomic", "save_torch_atomic"]
