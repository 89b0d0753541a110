"""VHD (Microsoft Virtual Hard Disk, QEMU's `vpc`): fixed, dynamic and differencing."""
