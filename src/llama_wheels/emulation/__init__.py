"""The emulated ARM test beds: the pinned qemu-user, the Debian glibc sysroot, the cross built musl bed, the
Debian packages they come from, and which bed runs which wheel. Judges (``judges/``) run wheels on them."""
