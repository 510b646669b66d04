"""The instruction-counting qemu's pins (build_config/qemu.toml [build], benchmarks/counting/qemu_plugin.py) and
its reader's gates (benchmarks/counting/insn_count.py), each fed a broken input; the counting itself, under the
built qemu: tests/bench/test_insn_count.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from benchmarks.counting import insn_count, qemu_plugin
from benchmarks.counting.insn_count import MARKER_MAGIC, CountError, read_counts
from llama_wheels.config.qemu_spec import load_qemu_build_spec
from llama_wheels.core.cache import sha256_file
from llama_wheels.core.errors import ChecksumError, ConfigError
from tests.support.checkout import REPO

SOURCE = REPO / "benchmarks" / "counting" / "plugins" / "insn_count.c"


def _qemu_toml(tmp_path: Path, old: str, new: str) -> Path:
    text = (REPO / "build_config" / "qemu.toml").read_text()
    assert old in text, old
    (tmp_path / "build_config").mkdir()
    (tmp_path / "build_config" / "qemu.toml").write_text(text.replace(old, new, 1))
    return tmp_path


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


def _output(tmp_path: Path, **change: object) -> Path:
    data: dict[str, object] = {
        "tool": insn_count.TOOL, "source_sha256": "a" * 64, "marker_magic": MARKER_MAGIC, "vcpus": 1,
        "total": 100, "slot_overflow": 0, "foreign_writes_to_minus_one": 0,
        "regions": {"0": {"insns": 60, "markers": 0}, "1": {"insns": 40, "markers": 1}},
        "files": ["/lib/libc.so.6"], "profile": [[1, 0, 4096, 10, 4], [0, 0, 8192, 6, 10]],
    }
    data.update(change)
    path = tmp_path / "counts.json"
    path.write_text(json.dumps(data))
    return path


def test_the_reader_takes_our_plugins_complete_output(tmp_path: Path) -> None:
    counts = read_counts(_output(tmp_path), source_sha256="a" * 64, regions=[1])
    assert (counts.total, counts.region(1), counts.region(0), counts.region(5)) == (100, 40, 60, 0)
    # each block's exact executions, what estimated cycles multiply its price by
    assert counts.blocks(1) == {insn_count.Block("/lib/libc.so.6", 4096, 10): 4}
    assert insn_count.attribute(counts, 0) == {("/lib/libc.so.6", None): 60}


@pytest.mark.parametrize(("change", "message"), [
    ({"tool": "someone else's counter"}, r"written by \"someone else's counter\""),
    ({"source_sha256": "b" * 64}, r"from source b{64}, not by .* from this checkout's source"),
    ({"regions": {"0": {"insns": 100, "markers": 0}}}, r"region 1 was opened by 0 markers, not 1: the guest did "
                                                       r"not mark it \(a marker-less run counts nothing\)"),
    ({"regions": {"0": {"insns": 60, "markers": 0}, "1": {"insns": 40, "markers": 2}}}, r"opened by 2 markers"),
    ({"slot_overflow": 3}, r"3 block executions had no profile slot"),
    ({"total": 101}, r"regions sum to 100, the total is 101"),
    ({"marker_magic": 1}, r"marker magic 1 is not"),
    ({"profile": [[1, 0, 4096, 10, 4], [0, 0, 8192, 6, 9]]},
     r"region 0's blocks \(instructions x executions\) sum to 54, but it counted 60: the per-block "
     r"profile is not exact"),
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


def test_a_tampered_plugin_library_is_refused(tmp_path: Path) -> None:
    library = tmp_path / qemu_plugin.PLUGIN_LIBRARY
    library.write_bytes(b"\x7fELF built by someone else")
    tampered = qemu_plugin.CountingQemu(qemu=tmp_path / "qemu-aarch64", plugin=library,
                                        source_sha256=sha256_file(SOURCE),
                                        manifest={"library_sha256": "0" * 64})
    with pytest.raises(ChecksumError, match=r"is not the one its manifest records .*: not the plugin llama-wheels"):
        tampered.check(SOURCE)


def test_the_plugin_source_is_ours_and_small() -> None:
    text = SOURCE.read_text()
    assert "qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu" in text and "MARKER_MAGIC" in text
    assert f"{MARKER_MAGIC:#x}" in text.lower().replace("uint64_c(", "").replace(")", "")
    assert len(text.splitlines()) < 400

