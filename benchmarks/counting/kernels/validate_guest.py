"""Guest side of the estimated-cycles validation (benchmarks/counting/validate.py): runs each hand-written
kernel of validate.so once, ``passes`` times round its loop, between the insn_count plugin's region markers
(region 1 + i for kernel i). Imports nothing from llama_wheels.

usage: python validate_guest.py LIBRARY PASSES MAGIC KERNEL...
"""

from __future__ import annotations

import ctypes
import sys


def main(argv: list[str]) -> int:
    library, passes, magic, kernels = argv[0], int(argv[1]), int(argv[2]), argv[3:]
    libc = ctypes.CDLL(None, use_errno=True)
    lib = ctypes.CDLL(library)
    for i, name in enumerate(kernels):
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = [ctypes.c_uint64], None
        libc.syscall(64, -1, None, magic + 1 + i)  # write(-1, NULL, MAGIC + region): the plugin's marker
        fn(passes)
    libc.syscall(64, -1, None, magic + 1 + len(kernels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
