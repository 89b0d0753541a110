"""bdrv: a QEMU-compatible block layer in Python.

The API used by the tools (Backend.open, Node, request flags, drivers, options) is
summarised in docs/core-api.md (read it first if you are writing a tool).
"""

__version__ = "0.1.0"
