"""Configure, build and run images: kernels, initramfs, images, and the VMs' configurations.

Everything in this package runs on the build host, never inside an image."""
