"""bdrv: a QEMU-compatible block layer in Python."""

__version__ = "0.1.0"
