"""The instruction-counting qemu (build_config/qemu.toml [build], testbed/qemu_plugin.py) and its plugin
(testbed/plugins/insn_count.c, read by testbed/insn_count.py).

Fast: the [build] pins and the reader's gates, each fed a broken input. Emulated: the qemu built from
Debian's source package (cached by its pins; about 2.5 min cold on 2 idle cores), counting exactly and
deterministically, and refusing what is not ours: a plugin from another source, a tampered library, a run
without its markers, a source package whose pin apt's index contradicts.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path

import pytest

from llama_wheels.config.cpus import load_cpus
from llama_wheels.config.qemu_spec import QemuBuildSpec, load_qemu_build_spec
from llama_wheels.core.cache import Cache, sha256_file
from llama_wheels.core.errors import ChecksumError, ConfigError
from llama_wheels.testbed import debs, insn_count, qemu_plugin, sysroot
from llama_wheels.testbed.insn_count import MARKER_MAGIC, CountError, read_counts
from llama_wheels.testbed.qemu import Sysroot

from .conftest import REPO

SOURCE = REPO / "src" / "llama_wheels" / "testbed" / "plugins" / "insn_count.c"


def _qemu_toml(tmp_path: Path, old: str, new: str) -> Path:
    text = (REPO / "build_config" / "qemu.toml").read_text()
    assert old in text, old
    (tmp_path / "build_config").mkdir()
    (tmp_path / "build_config" / "qemu.toml").write_text(text.replace(old, new, 1))
    return tmp_path


# ---- configuration -----------------------------------------------------------------------------------


def test_the_build_pins_the_source_package_of_the_pinned_release() -> None:
    spec = load_qemu_build_spec(REPO)
    assert spec.version == spec.debian.version, "the counting qemu is the release the test bed runs"
    assert spec.sources_line.startswith("deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ")
    assert spec.apt_name == f"qemu={spec.version}"
    assert {"--enable-plugins", "--target-list=aarch64-linux-user"} <= set(spec.configure)
    assert spec.plugin == SOURCE and spec.plugin.is_file()
    assert any(name.endswith(".orig.tar.xz") for name, _ in spec.files)


@pytest.mark.parametrize(("old", "new", "message"), [
    ('  "--enable-plugins",\n', "", r"build\.configure: lacks --enable-plugins"),
    ('  "--disable-docs",\n', '  "--disable-docs",\n  "--static",\n', r"--static, but TCG plugins need a dynamic"),
    ('dsc_sha256 = "a4', 'dsc_sha256 = "A4', r"build\.dsc_sha256: 'A4.*' is not the \.dsc's sha256"),
    ('"qemu_10.0.13+ds.orig.tar.xz" =', '"qemu.zip" =', r"build\.files: 'qemu\.zip' is not a source package file"),
    ("plugin = ", "plugn = ", r"build: unknown key 'plugn' \(did you mean 'plugin'\?\)"),
    ('  "--disable-docs",\n', '  "--disable-docs; rm -rf /",\n', r"is not a configure option"),
])
def test_a_loose_build_pin_is_refused(tmp_path: Path, old: str, new: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_qemu_build_spec(_qemu_toml(tmp_path, old, new))


def test_the_build_key_follows_every_pin() -> None:
    spec = load_qemu_build_spec(REPO)
    key = qemu_plugin.build_key(spec)
    assert qemu_plugin.build_key(dataclasses.replace(spec, configure=(*spec.configure, "--enable-lto"))) != key
    assert qemu_plugin.build_key(dataclasses.replace(spec, dsc_sha256="0" * 64)) != key
    assert qemu_plugin.build_key(dataclasses.replace(spec, plugin=Path("/elsewhere.c"))) == key  # its own key


# ---- the reader's gates ------------------------------------------------------------------------------


def _output(tmp_path: Path, **change: object) -> Path:
    data: dict[str, object] = {
        "tool": insn_count.TOOL, "source_sha256": "a" * 64, "marker_magic": MARKER_MAGIC, "vcpus": 1,
        "total": 100, "slot_overflow": 0, "foreign_writes_to_minus_one": 0,
        "regions": {"0": {"insns": 60, "markers": 0}, "1": {"insns": 40, "markers": 1}},
        "files": ["/lib/libc.so.6"], "profile": [[1, 0, 4096, 40], [0, 0, 8192, 60]],
    }
    data.update(change)
    path = tmp_path / "counts.json"
    path.write_text(json.dumps(data))
    return path


def test_the_reader_takes_our_plugins_complete_output(tmp_path: Path) -> None:
    counts = read_counts(_output(tmp_path), source_sha256="a" * 64, regions=[1])
    assert (counts.total, counts.region(1), counts.region(0), counts.region(5)) == (100, 40, 60, 0)


@pytest.mark.parametrize(("change", "message"), [
    ({"tool": "someone else's counter"}, r"written by \"someone else's counter\""),
    ({"source_sha256": "b" * 64}, r"from source b{64}, not by .* from this checkout's source"),
    ({"regions": {"0": {"insns": 100, "markers": 0}}}, r"region 1 was opened by 0 markers, not 1: the guest did "
                                                       r"not mark it \(a marker-less run counts nothing\)"),
    ({"regions": {"0": {"insns": 60, "markers": 0}, "1": {"insns": 40, "markers": 2}}}, r"opened by 2 markers"),
    ({"slot_overflow": 3}, r"3 block executions had no profile slot"),
    ({"total": 101}, r"regions sum to 100, the total is 101"),
    ({"marker_magic": 1}, r"marker magic 1 is not"),
])
def test_the_reader_refuses_what_it_cannot_trust(tmp_path: Path, change: dict[str, object], message: str) -> None:
    with pytest.raises(CountError, match=message):
        read_counts(_output(tmp_path, **change), source_sha256="a" * 64, regions=[1])


def test_no_output_and_broken_output_are_errors(tmp_path: Path) -> None:
    with pytest.raises(CountError, match=r"wrote no output"):
        read_counts(tmp_path / "none.json", source_sha256="a" * 64)
    (tmp_path / "half.json").write_text('{"tool": "llama-wheels insn')
    with pytest.raises(CountError, match=r"not the plugin's JSON"):
        read_counts(tmp_path / "half.json", source_sha256="a" * 64)


# ---- under the counting qemu ---------------------------------------------------------------------------

# A guest that marks region 1, runs a loop of N iterations, marks region 2 (the end).
_LOOP = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
n = int(sys.argv[1])
def mark(k):
    libc.syscall(64, -1, None, {magic} + k)
mark(1)
i = 0
while i < n:
    i += 1
mark(2)
"""


@pytest.fixture(scope="module")
def counting(cache: Cache) -> qemu_plugin.CountingQemu:
    return qemu_plugin.ensure_counting_qemu(cache)


@pytest.fixture(scope="module")
def root(cache: Cache) -> Sysroot:
    return sysroot.ensure_sysroot(cache)


def _loop(counting: qemu_plugin.CountingQemu, root: Sysroot, tmp_path: Path, n: int, *,
          regions: tuple[int, ...] = (1, 2), script: str = _LOOP) -> insn_count.Counts:
    path = tmp_path / "loop.py"
    path.write_text(script.format(magic=MARKER_MAGIC))
    cpu = load_cpus(REPO)["neoverse-n1"]
    _, counts = insn_count.run_counted(counting, root, cpu, ["-S", "loop.py", str(n)], out=tmp_path / "c.json",
                                       regions=regions, cwd=tmp_path)
    return counts


@pytest.mark.emulated
def test_the_counting_qemu_is_built_from_the_pinned_source_and_recorded(
        counting: qemu_plugin.CountingQemu) -> None:
    spec = load_qemu_build_spec(REPO)
    recorded = counting.manifest["qemu"]
    assert recorded["dsc_sha256"] == spec.dsc_sha256 and recorded["configure"] == list(spec.configure)
    assert "version 10.0.13" in recorded["qemu_version"]
    assert counting.source_sha256 == sha256_file(SOURCE)
    needed = subprocess.run(["ldd", str(counting.qemu)], capture_output=True, text=True).stdout
    assert "libglib-2.0" in needed and "libgmodule-2.0" in needed, "plugins need a dynamic qemu"
    counting.check(SOURCE)


@pytest.mark.emulated
def test_counts_are_exact_and_deterministic(counting: qemu_plugin.CountingQemu, root: Sysroot,
                                            tmp_path: Path) -> None:
    """The same run twice gives the same count for the marked region; a loop's region grows by exactly the
    same number of instructions for every further 1000 iterations (the interpreter runs the same
    instructions each time). Python's start (region 0, before any marker) is not claimed exact: measured
    55 of 28 M instructions apart once, on a cache's first run."""
    first, again = _loop(counting, root, tmp_path, 1000), _loop(counting, root, tmp_path, 1000)
    assert first.region(1) == again.region(1) > 0
    assert abs(first.region(0) - again.region(0)) < first.region(0) * 1e-4
    two, three = _loop(counting, root, tmp_path, 2000), _loop(counting, root, tmp_path, 3000)
    step = two.region(1) - first.region(1)
    assert step > 1000 * 10 and three.region(1) - two.region(1) == step
    assert first.vcpus == 1


@pytest.mark.emulated
def test_a_run_without_its_markers_is_an_error(counting: qemu_plugin.CountingQemu, root: Sysroot,
                                              tmp_path: Path) -> None:
    unmarked = _LOOP.replace("mark(1)\n", "").replace("mark(2)\n", "")
    with pytest.raises(CountError, match=r"region 1 was opened by 0 markers, not 1"):
        _loop(counting, root, tmp_path, 10, script=unmarked)


@pytest.mark.emulated
def test_a_plugin_from_another_source_is_refused(counting: qemu_plugin.CountingQemu, root: Sysroot,
                                                cache: Cache, tmp_path: Path) -> None:
    """A plugin compiled from a source that is not this checkout's: its library is refused before a run,
    and its output after one."""
    other_source = tmp_path / "insn_count.c"
    other_source.write_text(SOURCE.read_text().replace("#define MAX_SLOTS", "/* not ours */\n#define MAX_SLOTS"))
    spec: QemuBuildSpec = dataclasses.replace(load_qemu_build_spec(REPO), plugin=other_source)
    other = qemu_plugin.ensure_counting_qemu(cache, spec)
    assert other.plugin != counting.plugin and other.qemu == counting.qemu
    with pytest.raises(ChecksumError, match=r"compiled from a source with sha256 \w+, but .*insn_count\.c has"):
        other.check(SOURCE)
    foreign = dataclasses.replace(other, source_sha256=counting.source_sha256)  # its manifest lied
    with pytest.raises(CountError, match=r"not by 'llama-wheels insn_count' from this checkout's source"):
        _loop(foreign, root, tmp_path, 10)


def test_a_tampered_plugin_library_is_refused(tmp_path: Path) -> None:
    library = tmp_path / qemu_plugin.PLUGIN_LIBRARY
    library.write_bytes(b"\x7fELF built by someone else")
    tampered = qemu_plugin.CountingQemu(qemu=tmp_path / "qemu-aarch64", plugin=library,
                                        source_sha256=sha256_file(SOURCE),
                                        manifest={"library_sha256": "0" * 64})
    with pytest.raises(ChecksumError, match=r"is not the one its manifest records .*: not the plugin llama-wheels"):
        tampered.check(SOURCE)


@pytest.mark.emulated
def test_a_source_package_pin_that_apt_contradicts_is_refused_before_download(cache: Cache,
                                                                               tmp_path: Path) -> None:
    spec = load_qemu_build_spec(REPO)
    apt, update = debs.private_apt(cache, spec.sources_line, spec.debian.arch)
    dsc = f"{spec.package}_{spec.version.split(':', 1)[-1]}.dsc"
    pins = {dsc: spec.dsc_sha256, **dict(spec.files)}
    orig = next(name for name in pins if name.endswith(".orig.tar.xz"))
    def entry(name: str) -> str:
        return f"qemu.toml build.files.{name}"

    with pytest.raises(ChecksumError, match=rf"^{re.escape(entry(orig))}: apt's index gives sha256 {pins[orig]}, "
                                            r"not the pinned 0{64}"):
        debs.fetch_source(spec.apt_name, dest=tmp_path, apt=apt, update=update, pinned={**pins, orig: "0" * 64},
                          where="qemu.toml [build]", entry=entry)
    with pytest.raises(ChecksumError, match=r"lists the files .* the pins are"):
        debs.fetch_source(spec.apt_name, dest=tmp_path, apt=apt, update=update,
                          pinned={dsc: spec.dsc_sha256}, where="qemu.toml [build]", entry=entry)
    assert not list(tmp_path.iterdir()), "nothing downloaded"


def test_the_plugin_source_is_ours_and_small() -> None:
    text = SOURCE.read_text()
    assert "qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu" in text and "MARKER_MAGIC" in text
    assert f"{MARKER_MAGIC:#x}" in text.lower().replace("uint64_c(", "").replace(")", "")
    assert len(text.splitlines()) < 400
