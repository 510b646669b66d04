"""``llama-wheels release rehearse``: release.yml's job graph, run here.

The jobs, their order (``needs``), their ``run:`` steps and their environment are read from the generated
``.github/workflows/release.yml``, so the rehearsal and the workflow cannot drift: each ``run:`` step runs
as written (``bash -e``, in a checkout of its own), with ``LLAMA_WHEELS_RELEASES`` pointing at a directory
standing in for the repository's releases and ``LLAMA_WHEELS_PAGES_URL`` at a loopback HTTP server standing
in for Pages. What only GitHub has is stood in for, each said so in the output:

    actions/checkout               a copy of the checkout's tracked files (as they are on disk)
    actions/setup-python           this Python (its environment has llama-wheels installed)
    pypa/cibuildwheel + ci prepare the finished wheel of that target and pin from --wheels (built by
                                   `llama-wheels build`: the same pipeline the hooks call); a matrix entry
                                   without one is not rehearsed (macOS, Metal: GitHub's runners)
    scripts/bootstrap.sh           this machine's bootstrapped test bed
    llama-wheels test              on the --cpu classes only
    upload/download-artifact       a directory per artifact
    attest-build-provenance        not rehearsed (Sigstore, GitHub's attestation store)
    upload-pages-artifact, deploy-pages   the site swapped into the served directory

``--fail-after JOB`` stops the run after JOB with an error, as a failed job would; running the same tag
again must complete with nothing duplicated.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from llama_wheels.binaries.record import read_record
from llama_wheels.config import Config
from llama_wheels.core import runner
from llama_wheels.core.cache import atomic_path, remove
from llama_wheels.core.errors import LlamaWheelsError, UserError
from llama_wheels.release.store import ENV

PAGES_ENV = "LLAMA_WHEELS_PAGES_URL"
SERVER_LIFETIME = 3600.0  # seconds: the loopback server stops itself after this, whatever happens
_EXPRESSION = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        runner.current_log().write(f"pages: {format % args}\n")


@contextlib.contextmanager
def serve(directory: Path, *, lifetime: float = SERVER_LIFETIME) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (a free port) until the block ends or ``lifetime`` passes; yield its URL.

    The directory is looked up per request, so a deploy that swaps it is served at once.
    """
    directory.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    timer = threading.Timer(lifetime, server.shutdown)
    timer.daemon = True
    thread.start()
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def read_workflow(path: Path) -> dict[str, Any]:
    """The generated release.yml at ``path``, parsed (PyYAML: the rehearsal is a development command, and the
    test environment has it)."""
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        raise UserError("the rehearsal reads release.yml with PyYAML: install the test extra "
                        "(pip install -e '.[test]')") from None
    try:
        workflow = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        raise UserError(f"{path}{f':{where.line + 1}' if where else ''}: not valid YAML "
                        f"({getattr(exc, 'problem', None) or exc}); run `llama-wheels ci generate`") from None
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; run `llama-wheels ci generate`") from None
    if not isinstance(workflow, dict) or not isinstance(workflow.get("jobs"), dict):
        raise UserError(f"{path}: not a workflow (no jobs); run `llama-wheels ci generate`")
    return workflow


def job_order(jobs: Mapping[str, Any]) -> list[str]:
    """The jobs in an order that honours ``needs`` (file order among ready jobs, as GitHub lists them)."""
    order: list[str] = []
    while len(order) < len(jobs):
        ready = [name for name, job in jobs.items() if name not in order
                 and all(n in order for n in _needs(job))]
        if not ready:
            raise UserError("release.yml: the jobs' needs form a cycle or name a missing job")
        order.append(ready[0])
    return order


def _needs(job: Mapping[str, Any]) -> list[str]:
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else list(needs)


class Rehearsal:
    def __init__(self, config: Config, *, workflow: Path, tag: str, releases: Path, pages: Path, work: Path,
                 wheels: Path, cpus: list[str], url: str) -> None:
        self.config, self.tag, self.releases, self.pages = config, tag, releases, pages
        self.work, self.wheels, self.cpus, self.url = work, wheels, cpus, url
        self.artifacts = work / "artifacts"
        self.lines: list[str] = []
        self.path = workflow
        self.workflow = read_workflow(config.root / workflow)

    def say(self, line: str) -> None:
        self.lines.append(line)
        runner.current_log().progress(line)

    def expand(self, text: str, matrix: Mapping[str, str]) -> str:
        def value(match: re.Match[str]) -> str:
            expression = match.group(1)
            known = {"github.ref_name": self.tag, "github.ref": f"refs/tags/{self.tag}",
                     "github.repository": "rehearsal/llama-wheels", "github.token": "", "github.run_id": "1",
                     "github.run_attempt": "1"}
            if expression.startswith("matrix.") and expression[7:] in matrix:
                return matrix[expression[7:]]
            if expression in known:
                return known[expression]
            raise UserError(f"{self.path}: the rehearsal cannot evaluate ${{{{ {expression} }}}}; teach "
                            "release/rehearsal.py what it means here")
        return _EXPRESSION.sub(value, text)

    def env(self, job: Mapping[str, Any], step: Mapping[str, Any], matrix: Mapping[str, str]) -> dict[str, str]:
        env = dict(os.environ)
        for scope in (self.workflow.get("env", {}), job.get("env", {}), step.get("env", {})):
            env.update({k: self.expand(str(v), matrix) for k, v in scope.items()})
        env.update({ENV: str(self.releases), PAGES_ENV: self.url, "GITHUB_REF_NAME": self.tag,
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"})
        # the runner's cache path: here this machine's cache instead
        env.pop("LLAMA_WHEELS_CACHE", None)
        if "LLAMA_WHEELS_CACHE" in os.environ:
            env["LLAMA_WHEELS_CACHE"] = os.environ["LLAMA_WHEELS_CACHE"]
        return env

    def checkout(self, name: str) -> Path:
        where = self.work / "jobs" / name
        remove(where)
        files = subprocess.run(["git", "ls-files", "-z"], cwd=self.config.root, capture_output=True, check=True
                               ).stdout.decode().split("\0")
        for rel in filter(None, files):
            src = self.config.root / rel
            if src.is_file():
                (where / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, where / rel)
        return where

    def wheel_for(self, target: str, pin: str) -> Path | None:
        for wheel in sorted(self.wheels.rglob("*.whl")):
            record = read_record(wheel)
            if record and record.target.name == target and record.pin.name == pin:
                return wheel
        return None

    def run_job(self, name: str, job: Mapping[str, Any]) -> None:
        entries = job.get("strategy", {}).get("matrix", {}).get("include", [{}])
        for matrix in entries:
            matrix = {k: str(v) for k, v in matrix.items()}
            label = f"{name} {matrix.get('target', '')}@{matrix.get('pin', '')}" if matrix else name
            if "target" in matrix and self.wheel_for(matrix["target"], matrix["pin"]) is None:
                self.say(f"{label}: not rehearsed (no {matrix['target']}@{matrix['pin']} wheel in {self.wheels}; "
                         f"GitHub's {matrix.get('runner')} builds it)")
                continue
            self.run_steps(label, job, matrix)

    def run_steps(self, label: str, job: Mapping[str, Any], matrix: Mapping[str, str]) -> None:
        where = self.work / "jobs" / label.replace(" ", "_").replace("@", "_")
        remove(where)
        where.mkdir(parents=True)
        for step in job.get("steps", []):
            uses, run = step.get("uses", ""), step.get("run")
            with_ = {k: self.expand(str(v), matrix) for k, v in step.get("with", {}).items()}
            if uses.startswith("actions/checkout@"):
                where = self.checkout(label.replace(" ", "_").replace("@", "_"))
            elif uses.startswith(("actions/setup-python@", "actions/attest-build-provenance@")):
                if "attest" in uses:
                    self.say(f"{label}: attestation not rehearsed (Sigstore and GitHub's attestation store)")
            elif uses.startswith("pypa/cibuildwheel@"):
                wheel = self.wheel_for(matrix["target"], matrix["pin"])
                assert wheel is not None
                out = where / with_["output-dir"]
                out.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(wheel, out / wheel.name)
                self.say(f"{label}: cibuildwheel stands in: {wheel.name} from {self.wheels}")
            elif uses.startswith("actions/upload-artifact@"):
                self.upload(where, with_["name"], with_["path"])
            elif uses.startswith("actions/download-artifact@"):
                self.download(where, with_)
            elif uses.startswith("actions/upload-pages-artifact@"):
                self.upload(where, with_["name"], with_["path"])
            elif uses.startswith("actions/deploy-pages@"):
                self.deploy(with_["artifact_name"])
            elif run is not None:
                self.run_step(label, job, step, matrix, where)
            else:
                raise UserError(f"{self.path}: job {label} uses {uses}, which the rehearsal does not know; teach "
                                "release/rehearsal.py what stands in for it")

    def run_step(self, label: str, job: Mapping[str, Any], step: Mapping[str, Any], matrix: Mapping[str, str],
                 where: Path) -> None:
        command = self.expand(str(step["run"]), matrix).strip()
        if command.startswith("llama-wheels ci prepare"):
            return  # part of what the wheel from --wheels stands in for
        if command == "scripts/bootstrap.sh":
            self.say(f"{label}: bootstrap stands in: this machine's test bed")
            return
        if command.startswith("python -m pip install"):
            return  # this Python has llama-wheels and its locked dependencies installed
        command = command.replace(".venv/bin/llama-wheels", "llama-wheels")
        if command.startswith("llama-wheels test"):
            command += "".join(f" --cpu {cpu}" for cpu in self.cpus)
        self.say(f"{label}: {step.get('name') or command}")
        log = runner.current_log()
        log.write(f"$ {command}   (in {where})\n")
        done = subprocess.run(["bash", "-e", "-O", "nullglob", "-c", command], cwd=where,
                              env=self.env(job, step, matrix), capture_output=True, text=True, timeout=7200)
        log.write(done.stdout + done.stderr)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if line.startswith("llama-wheels: error:")]
            why = (errors or done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            failed = UserError if done.returncode == UserError.exit_code else LlamaWheelsError  # keep its exit code
            raise failed(f"{self.tag}: job {label} failed: {why.removeprefix('llama-wheels: error: ')}")

    def upload(self, where: Path, name: str, pattern: str) -> None:
        """upload-artifact: a directory's files relative to it, a glob's relative to the part before the ``*``."""
        if (where / pattern).is_dir():
            base, files = where / pattern, [p for p in (where / pattern).rglob("*") if p.is_file()]
        else:
            base = (where / pattern.split("*")[0]) if "*" in pattern else (where / pattern).parent
            base = base if base.is_dir() else base.parent
            files = [Path(p) for p in glob.glob(str(where / pattern)) if Path(p).is_file()]
        if not files:
            raise LlamaWheelsError(f"{self.tag}: artifact {name}: nothing matches {pattern}")
        with atomic_path(self.artifacts / name, directory=True) as tmp:
            for f in files:
                (tmp / f.relative_to(base)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, tmp / f.relative_to(base))

    def download(self, where: Path, with_: Mapping[str, str]) -> None:
        dest = where / with_["path"]
        if "name" in with_:
            shutil.copytree(self.artifacts / with_["name"], dest, dirs_exist_ok=True)
            return
        pattern = re.compile(with_["pattern"].replace("*", ".*"))
        for artifact in sorted(self.artifacts.iterdir()):
            if pattern.fullmatch(artifact.name):
                shutil.copytree(artifact, dest / artifact.name, dirs_exist_ok=True)

    def deploy(self, artifact: str) -> None:
        site = self.artifacts / artifact
        with atomic_path(self.pages.with_name(self.pages.name + ".new"), directory=True) as tmp:
            shutil.copytree(site, tmp, dirs_exist_ok=True)
        old = self.pages.with_name(self.pages.name + ".old")
        remove(old)
        if self.pages.exists():
            os.rename(self.pages, old)
        os.rename(self.pages.with_name(self.pages.name + ".new"), self.pages)
        remove(old)
        self.say(f"pages: deployed to {self.url}")


def rehearse(config: Config, *, workflow: Path, tag: str, releases: Path, pages: Path, work: Path, wheels: Path,
             cpus: list[str], fail_after: str | None = None) -> str:
    """Run the jobs of ``workflow`` (release.yml, relative to the checkout) for ``tag``; return what each did.
    Raises on the first failing job."""
    if not wheels.is_dir():
        raise UserError(f"{wheels}: no such directory; `llama-wheels build --dist {wheels}` makes the wheels")
    workflow_jobs = read_workflow(config.root / workflow)["jobs"]
    if fail_after is not None and fail_after not in workflow_jobs:
        raise UserError(f"--fail-after {fail_after}: release.yml has no such job ({', '.join(workflow_jobs)})")
    remove(work / "artifacts")
    with _served_pages(pages) as url:
        rehearsal = Rehearsal(config, workflow=workflow, tag=tag, releases=releases, pages=pages, work=work,
                              wheels=wheels, cpus=cpus, url=url)
        for name in job_order(workflow_jobs):
            rehearsal.say(f"job {name}")
            rehearsal.run_job(name, workflow_jobs[name])
            if name == fail_after:
                raise LlamaWheelsError(f"{tag}: failure injected after job {name} (--fail-after); run the same "
                                       "tag again to resume")
    return "\n".join([*rehearsal.lines, f"{tag}: every job of {workflow} done"])


@contextlib.contextmanager
def _served_pages(pages: Path) -> Iterator[str]:
    """Serve the parent of ``pages`` (so a deploy can swap ``pages`` itself) and yield ``pages``' URL."""
    pages.parent.mkdir(parents=True, exist_ok=True)
    with serve(pages.parent) as url:
        yield f"{url}/{pages.name}"
