"""File helpers shared by all commands: atomic writes and the output policy."""

from fuse4seg.io.atomic import (
    atomic_path,
    remove_stale_temporaries,
    save_json_atomic,
    save_torch_atomic,
)

__all__ = ["atomic_path", "remove_stale_temporaries", "save_json_atomic", "save_torch_atomic"]
