"""binfmt_misc for the emulated Python's own child processes: a standalone module the musl test bed installs as
its ``sitecustomize.py`` (``emulation/musl_bed.py``).

qemu-user hands a guest's ``execve`` to the host kernel with the guest's path, unmapped, and this machine has
no binfmt_misc entry for aarch64 (registering one changes the host). A guest that runs an aarch64 program
therefore fails: packaging (pip's tags) finds out which musl it runs on by running the ELF interpreter of
``sys.executable``, ``/lib/ld-musl-aarch64.so.1``, and without this module that is a FileNotFoundError, and
pip crashes instead of computing musllinux tags. This module does what a binfmt_misc entry would: when the
Python in the bed starts a subprocess whose executable is an aarch64 ELF (as the guest sees it, through
qemu's ``-L`` prefix), the host runs it with the same qemu, CPU and root as the parent, from
``LLAMA_WHEELS_GUEST_EXEC`` (set by ``emulation.qemu.run_guest``: the JSON list ``[qemu, cpu, root]``).
Anything else (a host program, a script, a missing file) is executed exactly as before.
"""

from __future__ import annotations

import _posixsubprocess
import json
import os
import sys
from typing import Any

_EM_AARCH64 = 183


def _guest_elf(path: bytes) -> bool | None:
    """True: an aarch64 ELF the guest sees at ``path``; False: some other file; None: no such file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
    except OSError:
        return None
    return len(head) == 20 and head[:4] == b"\x7fELF" and head[4] == 2 and \
        int.from_bytes(head[18:20], "little") == _EM_AARCH64


def _wrap(real: Any, qemu: str, cpu: str, root: str) -> Any:
    def fork_exec(args: Any, executable_list: Any, *rest: Any) -> Any:
        for exe in executable_list:
            kind = _guest_elf(os.fsencode(exe))
            if kind is None:
                continue  # execve tries the next PATH entry
            if kind:
                path = os.fsencode(exe)
                # The host sees the bed's file under the root (qemu -L maps the guest's opens the same way).
                inside = os.fsencode(root) + path if path.startswith(b"/") else path
                host = inside if os.path.exists(inside) else path
                argv = [os.fsencode(a) for a in args]
                new_args = [os.fsencode(qemu), b"-cpu", os.fsencode(cpu), b"-L", os.fsencode(root),
                            b"-0", argv[0] if argv else path, host, *argv[1:]]
                return real(new_args, (os.fsencode(qemu),), *rest)
            break  # the first existing candidate is what execve runs: not ours
        return real(args, executable_list, *rest)

    return fork_exec


def install() -> None:
    config = os.environ.get("LLAMA_WHEELS_GUEST_EXEC")
    if not config:
        return
    qemu, cpu, root = json.loads(config)
    wrapped = _wrap(_posixsubprocess.fork_exec, qemu, cpu, root)
    _posixsubprocess.fork_exec = wrapped
    if "subprocess" in sys.modules:  # imported before site ran: it holds the function itself
        sys.modules["subprocess"]._fork_exec = wrapped  # type: ignore[attr-defined]


install()
