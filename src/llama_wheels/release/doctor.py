"""``llama-wheels release doctor``: the repository settings a release needs, and what fails without each.

The release workflow cannot set these itself (they are repository settings, not workflow files), and each
one missing fails a release at a different job, most of them after the wheels are built. ``doctor``
lists them (no network); ``doctor --check`` reads them through the GitHub API (``gh api``, ``GH_REPO``)
and fails naming each one that is missing. The judging is pure (``judge_*``) and tested with the API's
documented answers.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llama_wheels.core import runner
from llama_wheels.core.errors import CommandFailed, LlamaWheelsError, UserError

TAG_PATTERN = "v*"  # release.yml runs on these tags
SAMPLE_TAG = "v1.2.3"


@dataclass(frozen=True, kw_only=True)
class Setting:
    name: str
    where: str  # where in the repository's settings
    value: str  # what it must be
    failure: str  # what fails, with which message, when it is missing

    def render(self, number: int) -> str:
        return (f"{number}. {self.name}: {self.where} -> {self.value}\n"
                f"   Without it: {self.failure}")


SETTINGS = (
    Setting(name="Pages source", where="Settings -> Pages -> Build and deployment -> Source",
            value="GitHub Actions",
            failure="the `pages` job fails at actions/deploy-pages with \"Failed to create deployment (status: "
                    "404) ... Ensure GitHub Pages has been enabled\" (Pages off), or status 400 \"Invalid deployment "
                    "branch\" (source \"Deploy from a branch\"); the `index` job already stops with \"Pages is not "
                    "enabled\", before anything is deployed. The draft release is not published."),
    Setting(name="github-pages environment, deployment tags",
            where="Settings -> Environments -> github-pages -> Deployment branches and tags",
            value=f"\"No restriction\", or \"Selected branches and tags\" with a rule of type Tag, name {TAG_PATTERN}",
            failure="GitHub creates the environment allowing the default branch only; the `pages` job is rejected "
                    f"before it starts: 'Tag \"{SAMPLE_TAG}\" is not allowed to deploy to github-pages due to "
                    "environment protection rules.' The draft release is not published; add the rule and "
                    "re-run the failed jobs (nothing is uploaded twice)."),
    Setting(name="arm64 Linux runners", where="Settings -> Actions -> Runners (public repository: nothing to do)",
            value="the `ubuntu-24.04-arm` label is served (free for public repositories; a private one needs a "
                  "larger runner with that label)",
            failure="every Linux `wheel` job waits with \"Waiting for a runner to pick up this job...\" until it is "
                    "cancelled; nothing is released."),
    Setting(name="Workflow permissions", where="Settings -> Actions -> General -> Workflow permissions",
            value="not restricted below what the jobs ask for (contents: write for draft/assets/publish; "
                  "pages: write and id-token: write for pages; attestations: write for attest)",
            failure="`release draft` fails with gh's \"HTTP 403: Resource not accessible by integration\"."),
)


def checklist() -> str:
    return "Repository settings a release (release.yml) needs:\n" + "\n".join(
        s.render(i) for i, s in enumerate(SETTINGS, 1))


@dataclass(frozen=True, kw_only=True)
class Finding:
    setting: str
    ok: bool
    detail: str


def judge_pages(pages: dict[str, Any] | None) -> Finding:
    """``GET /repos/{repo}/pages`` (None: 404, Pages not enabled)."""
    name = SETTINGS[0].name
    if pages is None:
        return Finding(setting=name, ok=False, detail="Pages is not enabled; set Source to GitHub Actions")
    if pages.get("build_type") != "workflow":
        return Finding(setting=name, ok=False, detail=f"Source builds from a branch (build_type "
                                                      f"{pages.get('build_type')!r}); set it to GitHub Actions")
    return Finding(setting=name, ok=True, detail=f"GitHub Actions, served at {pages.get('html_url')}")


def judge_environment(environment: dict[str, Any] | None, policies: Sequence[dict[str, Any]]) -> Finding:
    """``GET /repos/{repo}/environments/github-pages`` (None: 404, not created yet) and, for custom
    policies, ``.../deployment-branch-policies``' ``branch_policies``."""
    name = SETTINGS[1].name
    if environment is None:
        return Finding(setting=name, ok=True, detail="not created yet: the first deploy creates it allowing the "
                                                     f"default branch only; add the Tag rule {TAG_PATTERN} then")
    policy = environment.get("deployment_branch_policy")
    if policy is None:
        return Finding(setting=name, ok=True, detail="no restriction: every branch and tag may deploy")
    if not policy.get("custom_branch_policies"):
        return Finding(setting=name, ok=False,
                       detail=f"only protected branches may deploy, no tag; choose \"Selected branches and tags\" "
                              f"and add the Tag rule {TAG_PATTERN}")
    tags = [p["name"] for p in policies if p.get("type") == "tag"]
    if any(fnmatch.fnmatchcase(SAMPLE_TAG, pattern) for pattern in tags):
        return Finding(setting=name, ok=True, detail=f"tag rule(s) {', '.join(tags)} admit {SAMPLE_TAG}")
    return Finding(setting=name, ok=False, detail=f"no Tag rule admits {SAMPLE_TAG} (tag rules: "
                                                  f"{', '.join(tags) or 'none'}); add the Tag rule {TAG_PATTERN}")


def judge_runners(repository: dict[str, Any]) -> Finding:
    """``GET /repos/{repo}``: GitHub's arm64 standard runners serve public repositories."""
    name = SETTINGS[2].name
    if repository.get("private"):
        return Finding(setting=name, ok=False, detail="the repository is private: `ubuntu-24.04-arm` needs a "
                                                      "larger runner with that label (cannot be read from here)")
    return Finding(setting=name, ok=True, detail="public repository: GitHub's ubuntu-24.04-arm runners serve it")


def judge_all(get: Callable[[str], Any]) -> list[Finding]:
    """Every setting, read with ``get(path)`` (an API path relative to the repository; None on 404)."""
    environment = get("environments/github-pages")
    policies: list[dict[str, Any]] = []
    if environment and (environment.get("deployment_branch_policy") or {}).get("custom_branch_policies"):
        policies = (get("environments/github-pages/deployment-branch-policies") or {}).get("branch_policies", [])
    return [judge_pages(get("pages")), judge_environment(environment, policies), judge_runners(get("") or {})]


def check_github() -> str:
    gh = runner.require_tool("gh", "the GitHub CLI (https://cli.github.com), logged in")
    repo = os.environ.get("GH_REPO")
    if not repo:
        raise UserError("GH_REPO is not set: `GH_REPO=OWNER/REPO llama-wheels release doctor --check`")

    def get(path: str) -> Any:
        outcome = runner.probe([gh, "api", f"repos/{repo}/{path}".rstrip("/")], capture=True, timeout=120)
        if outcome.returncode != 0:
            if "HTTP 404" in outcome.output:
                return None
            raise CommandFailed(f"gh api repos/{repo}/{path}: {runner.telling_line(outcome.tail)}",
                                tail=outcome.tail)
        return json.loads(outcome.output)

    findings = judge_all(get)
    lines = [f"{'ok     ' if f.ok else 'MISSING'} {f.setting}: {f.detail}" for f in findings]
    missing = [f for f in findings if not f.ok]
    print("\n".join(lines))
    if missing:
        raise LlamaWheelsError(f"{repo}: {len(missing)} setting(s) a release needs are missing ({missing[0].setting}: "
                               f"{missing[0].detail}); `llama-wheels release doctor` lists them")
    return f"{repo}: every setting a release needs is in place"
