"""`llama-wheels pin add` / `pin check` on small made-up releases served by a PEP 691 index on loopback: real
git (3-way merges, format-patch), real HTTP, the real command line; offline. The real PyPI release is
tests/integration/network/test_pinning_pypi.py (network tier)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_wheels.config import load
from tests.support.checkout import cli
from tests.support.index import served
from tests.support.pins import snapshot, statuses

BASE = "9.9.9"


COMMITS = {BASE: "1" * 40, "9.9.10": "2" * 40, "9.9.11": "3" * 40, "9.9.12": "4" * 40}


LLAMA_PY = "".join(f"line {n}\n" for n in range(1, 31))


GGML_VARIANTS = """\
if (GGML_CPU_ALL_VARIANTS)
    if (GGML_SYSTEM_ARCH STREQUAL "ARM")
        if (CMAKE_SYSTEM_NAME MATCHES "Linux")
            ggml_add_cpu_backend_variant(armv8.0_1)
            ggml_add_cpu_backend_variant(armv8.2_1 DOTPROD)
{extra}        endif()
    endif()
endif()
"""


GGML_OPTIONS = ('option(GGML_NATIVE "native" ON)\noption({repack} "repack" ON)\n'
                'option(GGML_CPU_ALL_VARIANTS "" OFF)\n')


PINS = f"""\
default = "base"

[pins.base]
version = "{BASE}"
sdist_sha256 = "{{sha}}"
llama_cpp_commit = "{COMMITS[BASE][:9]}"
patches = ["0001-line-five.patch", "0002-line-twenty.patch"]

[pins.base.switches]
native = "GGML_NATIVE"
repack = "GGML_CPU_REPACK"
all_variants = "GGML_CPU_ALL_VARIANTS"
"""


TARGETS = """\
default = "dispatch"

[targets.dispatch]
description = "made up"
platform = "linux-aarch64"
index = "cpu"
[targets.dispatch.switches]
native = false
repack = true
all_variants = true

[targets.fixed]
description = "made up, needs a switch no pin maps"
platform = "linux-aarch64"
index = "fixed"
[targets.fixed.switches]
native = false
openmp = false
"""


REPACK_CPP = """\
static const ggml::cpu::tensor_traits * ggml_repack_get_optimal_repack_type(const struct ggml_tensor * cur) {
    if (cur->type == GGML_TYPE_Q4_0) {
        return nullptr;
%s    }
    return nullptr;
}
"""


def release(version: str, *, llama_py: str = LLAMA_PY, repack: str = "GGML_CPU_REPACK",
            extra_variant: str = "", repack_q1_0: bool = True) -> dict[str, str]:
    q1_0 = "    } else if (cur->type == GGML_TYPE_Q1_0) {\n" if repack_q1_0 else ""
    return {
        "vendor/llama.cpp/ggml/src/ggml-cpu/repack.cpp": REPACK_CPP % q1_0,
        "CHANGELOG.md": f"## [{version}]\n\n- update llama.cpp to ggml-org/llama.cpp@{COMMITS[version][:9]}\n",
        "vendor/llama.cpp/.git": "gitdir: ../../.git/modules/vendor/llama.cpp\n",
        ".git/modules/vendor/llama.cpp/HEAD": COMMITS[version] + "\n",
        "CMakeLists.txt": 'option(LLAMA_BUILD "build" ON)\n',
        "vendor/llama.cpp/ggml/CMakeLists.txt": GGML_OPTIONS.format(repack=repack),
        "vendor/llama.cpp/ggml/src/CMakeLists.txt": GGML_VARIANTS.format(extra=extra_variant),
        "llama_cpp/llama.py": llama_py,
    }


def sdist_bytes(version: str, files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"llama_cpp_python-{version}/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout


def format_patches(tmp: Path, files: dict[str, str], edits: list[tuple[str, str, str]]) -> dict[str, str]:
    """Real ``git format-patch`` files: each edit (patch name, old line, new line) of llama_cpp/llama.py."""
    repo = tmp / "author"
    (repo / "llama_cpp").mkdir(parents=True)
    (repo / "llama_cpp" / "llama.py").write_text(files["llama_cpp/llama.py"])
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "base")
    patches = {}
    for name, old, new in edits:
        path = repo / "llama_cpp" / "llama.py"
        path.write_text(path.read_text().replace(old, new, 1))
        git(repo, "commit", "-q", "-a", "-m", f"{name}\n\nWhy: a test. Goes when: never.")
        patches[name] = git(repo, "format-patch", "-1", "--stdout", "--zero-commit", "--no-signature", "HEAD")
    return patches


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A checkout whose pin ``base`` (9.9.9, two patches) is committed, and an index serving 9.9.9 and newer
    releases: 9.9.10 (lines added above both patches: offset), 9.9.11 (a line of patch 0002's context changed: the plain
    patch fails, a 3-way merge places it; repack renamed), 9.9.12 (line 5 itself changed: conflict)."""
    index = tmp_path / "index"
    (index / "llama-cpp-python").mkdir(parents=True)
    (index / "files").mkdir()
    shifted = "new a\nnew b\n" + LLAMA_PY
    releases = {
        BASE: release(BASE),
        "9.9.10": release("9.9.10", llama_py=shifted, repack_q1_0=False,
                          extra_variant="            ggml_add_cpu_backend_variant(armv9.2_1 SVE2)\n"),
        "9.9.11": release("9.9.11", llama_py=LLAMA_PY.replace("line 23\n", "line 23 changed\n"),
                          repack="GGML_CPU_REPACKING"),
        "9.9.12": release("9.9.12", llama_py=LLAMA_PY.replace("line 5\n", "line five\n")),
    }
    listing = []
    for version, files in releases.items():
        data = sdist_bytes(version, files)
        name = f"llama_cpp_python-{version}.tar.gz"
        (index / "files" / name).write_bytes(data)
        listing.append({"filename": name, "url": f"../files/{name}",
                        "hashes": {"sha256": hashlib.sha256(data).hexdigest()}})
    page = {"files": listing, "versions": list(releases)}
    (index / "llama-cpp-python" / "index.json").write_text(json.dumps(page))

    root = tmp_path / "checkout"
    (root / "build_config").mkdir(parents=True)
    base_sha = listing[0]["hashes"]["sha256"]  # type: ignore[index]
    (root / "build_config" / "pins.toml").write_text(PINS.format(sha=base_sha))
    (root / "build_config" / "targets.toml").write_text(TARGETS)
    patch_dir = root / "patches" / BASE
    patch_dir.mkdir(parents=True)
    edits = [("0001-line-five.patch", "line 5\n", "line 5 patched\n"),
             ("0002-line-twenty.patch", "line 20\n", "line 20 patched\n")]
    for name, text in format_patches(tmp_path, releases[BASE], edits).items():
        (patch_dir / name).write_text(text)

    with served(index) as url:
        monkeypatch.setenv("LLAMA_WHEELS_INDEX_URL", url)
        monkeypatch.setenv("LLAMA_WHEELS_CACHE", str(tmp_path / "cache"))
        yield root


def pin_add(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("--config", str(root), "--log", str(root.parent / "pin.log"), "pin", "add", *args, cwd=root)


def test_pin_add_writes_the_entry_and_refreshed_patches(world: Path) -> None:
    before = (world / "build_config" / "pins.toml").read_text()
    result = pin_add(world, "9.9.10", "--name", "next")
    assert result.returncode == 0, result.stdout + result.stderr
    assert statuses(result.stdout) == {"0001-line-five.patch": "offset", "0002-line-twenty.patch": "offset"}
    assert "hunk #1 at line 4, offset 2 lines" in result.stdout
    # every target checked, the pin's own (the default target) required; the other one cannot build here
    assert "    ok        dispatch" in result.stdout
    assert "    cannot    fixed  target fixed sets switch 'openmp'" in result.stdout
    assert "added: armv9.2_1; removed: none" in result.stdout
    assert "    at 9.9.10: Q4_0\n    9.9.9 -> 9.9.10: added none; no longer repacked Q1_0" in result.stdout
    # the verdict says what changes for the wheel suite: Q1_0 (which the oracle expects repacked from 0.3.36 on)
    # is no longer repacked, and a variant came
    [verdict] = [line for line in result.stdout.splitlines() if line.startswith("  result ")]
    assert verdict == ("  result     ok; expectations change: Q1_0 no longer repacked but oracle.py still expects it "
                       "at 9.9.10: its wheel suite fails until REPACKED_SINCE says so; Linux ARM variants added: "
                       "armv9.2_1, gone: none")
    after = (world / "build_config" / "pins.toml").read_text()
    assert after.startswith(before)  # appended: the committed entries and their comments stay as written
    pin = load(world).pin("next")
    base = load(world).pin("base")
    assert (pin.version, pin.llama_cpp_commit, pin.patches) == ("9.9.10", COMMITS["9.9.10"], base.patches)
    assert pin.switches == load(world).pin("base").switches  # extends = "base", nothing copied
    assert '[pins.next.switches]\nextends = "base"\n' in after
    for name in pin.patches:
        old, new = (world / "patches" / BASE / name).read_text(), (world / "patches" / "9.9.10" / name).read_text()
        assert new.split("\n---\n")[0] == old.split("\n---\n")[0]  # From/Date/Subject/body kept
        assert old.count("\n@@ -") == new.count("\n@@ -") == 1 and old != new  # refreshed against the new tree
    assert "\n@@ -4,7 +4,7 @@" in (world / "patches" / "9.9.10" / "0001-line-five.patch").read_text()
    # the new pin passes its own check, offline from the cache
    check = cli("--config", str(world), "pin", "check", "next", cwd=world, env=_offline())
    assert check.returncode == 0, check.stdout + check.stderr
    assert statuses(check.stdout) == {"0001-line-five.patch": "clean", "0002-line-twenty.patch": "clean"}


def _offline() -> dict[str, str]:
    import os

    return {**os.environ, "LLAMA_WHEELS_INDEX_URL": "http://127.0.0.1:9/unreachable"}


def test_pin_add_merges_three_way_and_suggests_the_renamed_switch(world: Path) -> None:
    before = snapshot(world)
    result = pin_add(world, "9.9.11")
    assert result.returncode == 2
    assert statuses(result.stdout)["0002-line-twenty.patch"] == "merged"
    assert "missing   repack = \"GGML_CPU_REPACK\"  is not declared (declared at 9.9.9, gone here); did you " \
           "mean GGML_CPU_REPACKING?" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == (
        "llama-wheels: error: pin add 9.9.11: nothing written: switch repack = GGML_CPU_REPACK is not declared "
        "(declared at 9.9.9, gone here); did you mean GGML_CPU_REPACKING? (pin add --switch repack=NAME) "
        "(and 1 more, above)")
    assert snapshot(world) == before
    # the rename given: written, as an override of the inherited table
    result = pin_add(world, "9.9.11", "--switch", "repack=GGML_CPU_REPACKING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert load(world).pin("9.9.11").switches["repack"] == "GGML_CPU_REPACKING"
    assert '[pins."9.9.11".switches]\nextends = "base"\nrepack = "GGML_CPU_REPACKING"\n' in (
        world / "build_config" / "pins.toml").read_text()


def test_pin_add_reports_a_conflict_with_its_hunk_and_writes_nothing(world: Path) -> None:
    before = snapshot(world)
    result = pin_add(world, "9.9.12")
    assert result.returncode == 2
    # the conflict does not stop the series: the next patch is still tried and reported
    assert statuses(result.stdout) == {"0001-line-five.patch": "conflict", "0002-line-twenty.patch": "clean"}
    assert "conflict in llama_cpp/llama.py" in result.stdout
    assert "      | -line 5\n      | +line 5 patched\n" in result.stdout  # the rejected hunk
    worktree = world / ".pin-add" / "9.9.12"
    assert (f"error: pin add 9.9.12: stopped in {worktree / 'repo'}: patch 0001-line-five.patch does not apply"
            in result.stderr)
    assert {k: v for k, v in snapshot(world).items() if not k.startswith(".pin-add/")} == before


def conflict_block(text: str) -> tuple[str, str]:
    match = re.search(r"^<<<<<<< [^\n]*\n(.*?)^=======\n(.*?)^>>>>>>> [^\n]*\n", text, re.S | re.M)
    assert match, text
    return match[1], match[2]


def test_a_conflict_stops_in_a_named_worktree_and_continue_writes_the_pin(world: Path) -> None:
    """The conflict is a step: the series waits at the conflicting patch, markers in place; --continue after
    the engineer resolved and staged it carries the rest and writes the pin, atomically, as one pin add."""
    before = snapshot(world)
    result = pin_add(world, "9.9.12")
    assert result.returncode == 2
    repo = world / ".pin-add" / "9.9.12" / "repo"
    assert (f"stopped    at 0001-line-five.patch: the series is carried up to it in {repo}\n"
            "           (git am stopped there; conflict markers in llama_cpp/llama.py)\n") in result.stdout
    assert "then `llama-wheels pin add 9.9.12 --continue`;" in result.stdout
    assert "or `llama-wheels pin add 9.9.12 --abort` to remove" in result.stdout
    llama_py = repo / "llama_cpp" / "llama.py"
    ours, theirs = conflict_block(llama_py.read_text())
    assert (ours, theirs) == ("line five\n", "line 5 patched\n")
    git_status = subprocess.run(["git", "status"], cwd=repo, capture_output=True, text=True, check=True).stdout
    assert "You are in the middle of an am session" in git_status

    # not resolved yet: refused, the worktree kept
    result = pin_add(world, "9.9.12", "--continue")
    assert result.returncode == 2
    assert f"llama_cpp/llama.py in {repo} still unmerged" in result.stderr
    # staged with its markers: refused too
    subprocess.run(["git", "add", "llama_cpp/llama.py"], cwd=repo, check=True)
    result = pin_add(world, "9.9.12", "--continue")
    assert result.returncode == 2 and "still hold conflict markers" in result.stderr
    # a plain pin add is refused while the worktree waits
    result = pin_add(world, "9.9.12")
    assert result.returncode == 2 and f"its worktree is {repo.parent}" in result.stderr
    assert {k: v for k, v in snapshot(world).items() if not k.startswith(".pin-add/")} == before

    llama_py.write_text(re.sub(r"^<<<<<<< .*?^>>>>>>> [^\n]*\n", "line five patched\n", llama_py.read_text(),
                               flags=re.S | re.M))
    subprocess.run(["git", "add", "llama_cpp/llama.py"], cwd=repo, check=True)
    result = pin_add(world, "9.9.12", "--continue")
    assert result.returncode == 0, result.stdout + result.stderr
    assert statuses(result.stdout) == {"0001-line-five.patch": "clean", "0002-line-twenty.patch": "clean"}
    assert not (world / ".pin-add").exists()
    written = (world / "patches" / "9.9.12" / "0001-line-five.patch").read_text()
    assert "-line five\n+line five patched\n" in written
    assert (world / "patches" / "9.9.12" / "0002-line-twenty.patch").is_file()
    assert load(world).pin("9.9.12").patches == ("0001-line-five.patch", "0002-line-twenty.patch")


def test_abort_removes_the_worktree_and_writes_nothing(world: Path) -> None:
    before = snapshot(world)
    assert pin_add(world, "9.9.12").returncode == 2
    assert (world / ".pin-add" / "9.9.12" / "repo").is_dir()
    result = pin_add(world, "9.9.12", "--abort")
    assert result.returncode == 0, result.stderr
    assert f"removed {world / '.pin-add' / '9.9.12'}; nothing was written" in result.stdout
    assert snapshot(world) == before and not (world / ".pin-add").exists()
    result = pin_add(world, "9.9.12", "--abort")
    assert result.returncode == 2
    assert "no pin add of 9.9.12 is stopped at a conflict here" in result.stderr
    result = pin_add(world, "9.9.12", "--continue")
    assert result.returncode == 2 and "run `llama-wheels pin add 9.9.12` first" in result.stderr


def test_a_patch_refreshed_by_hand_in_the_new_directory_is_used(world: Path) -> None:
    """After a conflict: fix the patch in patches/<VERSION>/, run pin add again."""
    fixed = (world / "patches" / BASE / "0001-line-five.patch").read_text()
    fixed = fixed.replace("-line 5\n+line 5 patched\n", "-line five\n+line 5 patched\n")
    (world / "patches" / "9.9.12").mkdir()
    (world / "patches" / "9.9.12" / "0001-line-five.patch").write_text(fixed)
    result = pin_add(world, "9.9.12")
    assert result.returncode == 0, result.stdout + result.stderr
    assert statuses(result.stdout) == {"0001-line-five.patch": "clean", "0002-line-twenty.patch": "clean"}
    assert "(as in patches/9.9.12/0001-line-five.patch)" in result.stdout
    assert (world / "patches" / "9.9.12" / "0001-line-five.patch").read_text() == fixed  # kept as written


@pytest.mark.parametrize(("args", "message"), [
    (["9.9.13"], "llama_cpp_python-9.9.13.tar.gz is not on http://127.0.0.1:"),
    (["9.9.10", "--name", "base"], "pin 'base' exists already in build_config/pins.toml; give --name another name"),
    (["9.9.10", "--from", "bsae"], "unknown pin 'bsae' (did you mean 'base'?)"),
    (["9.9.10", "--switch", "repak=X"], "unknown switch 'repak' (did you mean 'repack'?)"),
    (["9.9.10", "--switch", "arm_arch=-march=armv8-a"], "'-march=armv8-a' is neither a CMake variable name"),
    # a release pinned already: named, not a second entry (a second pin of it on purpose takes --name)
    ([BASE], f"llama-cpp-python {BASE} is pinned already: pins.base in build_config/pins.toml"),
])
def test_pin_add_refuses_bad_input_in_one_line(world: Path, args: list[str], message: str) -> None:
    before = snapshot(world)
    result = pin_add(world, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("llama-wheels: error:")]
    assert message in line
    assert snapshot(world) == before


def test_pin_check_fails_on_a_committed_patch_that_does_not_apply(world: Path) -> None:
    assert cli("--config", str(world), "pin", "check", "--all", cwd=world).returncode == 0
    patch = world / "patches" / BASE / "0002-line-twenty.patch"
    patch.write_text(patch.read_text().replace(" line 19\n", " line nineteen\n"))
    result = cli("--config", str(world), "pin", "check", cwd=world, env=_offline())
    assert result.returncode == 2
    assert statuses(result.stdout) == {"0001-line-five.patch": "clean", "0002-line-twenty.patch": "conflict"}
    assert "error: pin check base: patch 0002-line-twenty.patch does not apply" in result.stderr


def test_pin_check_json_is_the_report_for_machines(world: Path) -> None:
    result = cli("--config", str(world), "pin", "check", "--json", cwd=world)
    assert result.returncode == 0, result.stderr
    [report] = json.loads(result.stdout)
    assert report["pin"]["name"] == "base" and report["problems"] == []
    assert {p["name"]: p["status"] for p in report["patches"]} == {"0001-line-five.patch": "clean",
                                                                 "0002-line-twenty.patch": "clean"}
    patch = world / "patches" / BASE / "0002-line-twenty.patch"
    patch.write_text(patch.read_text().replace(" line 19\n", " line nineteen\n"))
    result = cli("--config", str(world), "pin", "check", "--json", cwd=world, env=_offline())
    assert result.returncode == 2
    [report] = json.loads(result.stdout)
    assert report["problems"] == [next(p for p in report["problems"] if p.startswith("patch 0002-line-twenty"))]


def test_the_pins_own_targets_must_plan_at_the_new_release(world: Path) -> None:
    pins = world / "build_config" / "pins.toml"
    pins.write_text(pins.read_text().replace('patches = ["0001', 'targets = ["dispatch", "fixed"]\npatches = ["0001'))
    before = snapshot(world)
    result = pin_add(world, "9.9.10")
    assert result.returncode == 2
    assert "    FAILS     fixed  target fixed sets switch 'openmp'" in result.stdout
    assert "nothing written: target fixed: target fixed sets switch 'openmp'" in result.stderr
    assert snapshot(world) == before
    # the pin's own targets are carried over to the new entry
    pins.write_text(pins.read_text().replace('targets = ["dispatch", "fixed"]', 'targets = ["dispatch"]'))
    result = pin_add(world, "9.9.10")
    assert result.returncode == 0, result.stdout + result.stderr
    assert load(world).pin("9.9.10").targets == ("dispatch",)


def test_a_patch_without_mail_headers_is_named(world: Path) -> None:
    """The series is git format-patch files (their headers are what the refreshed ones keep): a bare diff is
    reported as such, and the rest of the series still goes on."""
    patch = world / "patches" / BASE / "0001-line-five.patch"
    patch.write_text(patch.read_text()[patch.read_text().index("diff --git"):])
    result = cli("--config", str(world), "pin", "check", cwd=world)
    assert result.returncode == 2
    assert statuses(result.stdout) == {"0001-line-five.patch": "conflict", "0002-line-twenty.patch": "clean"}
    assert "0001-line-five.patch  (not a git format-patch file; write it with git format-patch)" in result.stdout



def test_pin_check_fails_on_a_patch_that_touches_a_file_outside_the_source(world: Path) -> None:
    """A stray file committed with a patch (patch 0.3.36/0007 carried `out/0001-....patch`, a format-patch
    output, into every prepared tree) is refused: the sdist has no out/ directory."""
    assert cli("--config", str(world), "pin", "check", cwd=world).returncode == 0
    patch = world / "patches" / BASE / "0002-line-twenty.patch"
    blob = b"stray\n"
    blob_id = hashlib.sha1(b"blob %d\0%s" % (len(blob), blob)).hexdigest()[:7]
    stray = ("diff --git a/out/0001-stray.patch b/out/0001-stray.patch\nnew file mode 100644\n"
             f"index 0000000..{blob_id}\n"
             "--- /dev/null\n+++ b/out/0001-stray.patch\n@@ -0,0 +1 @@\n+stray\n")
    patch.write_text(patch.read_text() + stray)
    result = cli("--config", str(world), "pin", "check", cwd=world, env=_offline())
    assert result.returncode == 2, result.stdout + result.stderr
    assert ("error: pin check base: patch 0002-line-twenty.patch touches out/0001-stray.patch, outside the "
            "source tree it patches (no out/ in the sdist)") in result.stderr


_REFRESHED = """\
From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: llama-wheels <llama-wheels@localhost>
Subject: [PATCH] change a line

---
 a.txt | 2 +-
 1 file changed, 1 insertion(+), 1 deletion(-)

diff --git a/a.txt b/a.txt
--- a/a.txt
+++ b/a.txt
@@ -1 +1 @@
-{old}
+changed
"""


def test_carried_patches_go_on_through_the_builds_engine_and_one_it_cannot_apply_is_named(tmp_path: Path) -> None:
    """apply_refreshed: a refreshed patch goes onto the tree as `prepare` would apply it; one the build's `git
    apply` refuses (the sabotage: its context is not in the tree) is a PatchError naming it, not a silent skip;
    a conflict (no refreshed text) is left out."""
    from llama_wheels.core.errors import PatchError
    from llama_wheels.pins.carry import apply_refreshed
    from llama_wheels.pins.report import PatchResult

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("original\n")
    good = PatchResult(name="0001-good.patch", source="x", status="clean", refreshed=_REFRESHED.format(old="original"))
    conflict = PatchResult(name="0002-conflict.patch", source="x", status="conflict")
    apply_refreshed([good, conflict], tree, tmp_path / "refreshed")
    assert (tree / "a.txt").read_text() == "changed\n"
    bad = PatchResult(name="0003-stale.patch", source="x", status="clean", refreshed=_REFRESHED.format(old="gone"))
    with pytest.raises(PatchError, match=r"patch 0003-stale\.patch does not apply to a\.txt"):
        apply_refreshed([bad], tree, tmp_path / "refreshed")
    assert (tree / "a.txt").read_text() == "changed\n"  # nothing half-applied
