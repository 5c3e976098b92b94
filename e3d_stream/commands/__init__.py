"""One module per ``e3d-stream`` subcommand.

Each module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. :mod:`e3d_stream.cli` imports a module only when its
subcommand is used, so ``e3d-stream --help`` stays fast and light.
"""
