"""Command-line interface: `fuse4seg <command> ...` (see `fuse4seg --help`)."""
