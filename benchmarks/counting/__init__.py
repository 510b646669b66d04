"""Instruction counting under the plugin-capable qemu, used by the ARM benchmark (``benchmarks.arm``)."""
