"""The qcow2 format (QEMU copy-on-write v2/v3); importing it registers the driver."""

from bdrv.drivers.qcow2.driver import Qcow2Driver

__all__ = ["Qcow2Driver"]
