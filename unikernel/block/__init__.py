"""Storage: raw block devices, as the application's declared disks."""
