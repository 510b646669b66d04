"""Patch 0008: Llama()'s default thread counts on Linux aarch64 come from the affinity mask; x86_64 unchanged.

The emulated ARM machine needs a CPU count of its own: qemu-user forwards sched_getaffinity and
/sys/devices/system/cpu to this host (2 cores), where 4 // 2 and 4 cannot be told from 2 // 2 and 2 by
accident. A small aarch64 library, preloaded into the guest's Python (LD_PRELOAD reaches the guest's
loader; the pinned qemu is static and ignores it), reports a 4-CPU affinity set and 4 online CPUs to every
libc caller: ``os.sched_getaffinity`` and ``os.cpu_count`` (``sysconf``) alike. The unpatched default
would then be n_threads 2, n_threads_batch 4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llama_wheels.config.cpus import SMOKE_CPU, load_cpus
from llama_wheels.core.cache import Cache
from llama_wheels.emulation.qemu import install_wheel, run_python
from llama_wheels.emulation.sysroot import ensure_sysroot
from llama_wheels.judges.verify import SMOKE_MODEL
from llama_wheels.standalone.models import SPECS, write_model
from tests.support.checkout import REPO

FAKE_CPUS = 4


SHIM = f"""\
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>
/* llama-wheels tests/integration/emulated/test_threads.py: a {FAKE_CPUS}-CPU machine, as libc's callers see it. */
int sched_getaffinity(pid_t pid, size_t size, cpu_set_t *mask) {{
    (void)pid;
    if (CPU_ALLOC_SIZE({FAKE_CPUS}) > size) {{ errno = EINVAL; return -1; }}
    memset(mask, 0, size);
    for (int i = 0; i < {FAKE_CPUS}; i++) CPU_SET_S(i, size, mask);
    return 0;
}}
long sysconf(int name) {{
    static long (*real)(int);
    if (name == _SC_NPROCESSORS_ONLN || name == _SC_NPROCESSORS_CONF) return {FAKE_CPUS};
    if (!real) real = (long (*)(int))dlsym(RTLD_NEXT, "sysconf");
    return real(name);
}}
int get_nprocs(void) {{ return {FAKE_CPUS}; }}
int get_nprocs_conf(void) {{ return {FAKE_CPUS}; }}
"""


PROBE = """\
import json, multiprocessing, os, sys
from llama_cpp import Llama
from llama_cpp.llama import default_n_threads
llm = Llama(model_path=sys.argv[1], n_ctx=64, verbose=False)
print("THREADS " + json.dumps({
    "affinity": len(os.sched_getaffinity(0)), "cpu_count": multiprocessing.cpu_count(),
    "n_threads": llm.n_threads, "n_threads_batch": llm.n_threads_batch,
    "context": [llm.context_params.n_threads, llm.context_params.n_threads_batch],
    "explicit": Llama(model_path=sys.argv[1], n_ctx=64, n_threads=3, n_threads_batch=1, verbose=False).n_threads,
    "x86_64": default_n_threads("x86_64"), "aarch64": default_n_threads("aarch64")}))
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("shim")
    (d / "cpus.c").write_text(SHIM)
    zig_cache = str(Cache.from_env().zig)
    env = {**os.environ, "ZIG_GLOBAL_CACHE_DIR": zig_cache, "ZIG_LOCAL_CACHE_DIR": zig_cache}
    subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target", "aarch64-linux-gnu.2.17", "-shared", "-fPIC",
                    "-O2", "-o", str(d / "libcpus.so"), str(d / "cpus.c"), "-ldl"],
                   check=True, capture_output=True, env=env, timeout=900)
    return d / "libcpus.so"


def guest_threads(wheel: Path, cache: Cache, tmp_path: Path, env: dict[str, str] | None) -> dict[str, object]:
    site = install_wheel(wheel, tmp_path / "site")
    model = write_model(SPECS[SMOKE_MODEL], tmp_path / "model.gguf")
    outcome = run_python(ensure_sysroot(cache), load_cpus(REPO)[SMOKE_CPU], ["-c", PROBE, str(model)],
                         pythonpath=[site], env=env, timeout=600)
    lines = [line for line in outcome.output.splitlines() if line.startswith("THREADS ")]
    assert outcome.returncode == 0 and lines, outcome.tail
    result: dict[str, object] = json.loads(lines[-1].removeprefix("THREADS "))
    return result


def test_aarch64_defaults_to_every_cpu_of_an_emulated_4_cpu_affinity_set(
        default_wheel: Path, cache: Cache, shim: Path, tmp_path: Path) -> None:
    got = guest_threads(default_wheel, cache, tmp_path, {"LD_PRELOAD": str(shim)})
    assert (got["affinity"], got["cpu_count"]) == (FAKE_CPUS, FAKE_CPUS)  # the shim is what the guest sees
    assert (got["n_threads"], got["n_threads_batch"]) == (FAKE_CPUS, FAKE_CPUS)  # unpatched: (2, 4)
    assert got["context"] == [FAKE_CPUS, FAKE_CPUS]  # what reaches llama_context_params
    assert got["explicit"] == 3  # an explicit n_threads wins
    # the x86_64 branch, forced in the same guest: exactly the old default
    assert got["x86_64"] == [FAKE_CPUS // 2, FAKE_CPUS] and got["aarch64"] == [FAKE_CPUS, FAKE_CPUS]


def test_without_the_shim_the_guest_sees_this_hosts_cpus(default_wheel: Path, cache: Cache, tmp_path: Path) -> None:
    """The control: the 4 above come from the shim, not from this machine (qemu-user forwards the host's)."""
    got = guest_threads(default_wheel, cache, tmp_path, None)
    host = len(os.sched_getaffinity(0))
    assert got["affinity"] == host
    assert (got["n_threads"], got["n_threads_batch"]) == (host, host)

