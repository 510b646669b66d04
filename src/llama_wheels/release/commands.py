"""The ``llama-wheels release ...`` subcommands: argument parsing and printing around ``publishing.py``
(the decisions), ``doctor.py`` (the repository settings) and ``rehearsal.py`` (the job graph run here)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llama_wheels.config import Config
from llama_wheels.core.errors import UserError
from llama_wheels.release.store import ENV, GITHUB

# Where the tag comes from on GitHub's runners when --tag is not given.
TAG_ENV = "GITHUB_REF_NAME"
PAGES_ENV = "LLAMA_WHEELS_PAGES_URL"


def add_parser(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """The ``release`` command and its subcommands; ``command(sub, name, summary, description, *examples)`` is
    the CLI's maker of a documented (sub)command."""
    p = command(sub, "release", "the release job graph as commands",
                "What a tag releases, as the commands release.yml calls in its job order: plan, draft, assets, "
                "index, notes, publish (last). Each takes local directories or the GitHub release store, so the "
                "same commands run here (rehearse) and on GitHub. Published bytes never change: a rebuild that "
                "differs keeps the published file and says so in one line.",
                "llama-wheels release doctor", "llama-wheels release plan --releases ./releases")
    rel = p.add_subparsers(dest="release_command", required=True, metavar="SUBCOMMAND", title="subcommands")

    def store(q: argparse.ArgumentParser, *, tag: bool = True) -> None:
        q.add_argument("--releases", help=f"`{GITHUB}` or a directory standing in for the repository's releases "
                                          f"(default ${ENV})")
        if tag:
            q.add_argument("--tag", help=f"the release's tag (default ${TAG_ENV})")

    q = command(rel, "plan", "what this tag builds new, given the published assets",
                "Every published pin x target with its build number, marked new (this tag builds it) or already "
                "published (its files are kept as they are).",
                "llama-wheels release plan --releases ./releases")
    store(q, tag=False)
    q = command(rel, "draft", "create the tag's draft release (a re-run finds it)",
                "Create the tag's release as a draft, invisible to users until `release publish`; a re-run of the "
                "job finds the draft instead of failing with 'already exists'.",
                "llama-wheels release draft --releases ./releases --tag v0.3.36-1")
    store(q)
    q = command(rel, "assets", "upload the wheels to the draft, published bytes kept",
                "Upload DIST's wheels to the tag's draft as <target>--<wheel>. A file already published with the "
                "same bytes is not uploaded again; a rebuilt file whose bytes differ keeps the published copy and is "
                "reported in one line with both sha256; a re-run uploads only what is missing.",
                "llama-wheels release assets dist --releases ./releases --tag v0.3.36-1")
    q.add_argument("dist", type=Path, help="the downloaded wheel artifacts (searched recursively)")
    q.add_argument("--report", type=Path, action="append", default=[], help="a report file to attach")
    store(q)
    q = command(rel, "index", "the index of every release's wheels, verified",
                "Write the PEP 503 index of every published release's wheels and this tag's draft. Every earlier "
                "asset is first verified against the sha256 the previous index published (digests.json): a "
                "tampered or withdrawn asset is refused, naming the file and both sha256.",
                "llama-wheels release index site --releases ./releases --tag v0.3.36-1 --previous https://o.github.io/r")
    q.add_argument("out", type=Path, help="the site directory to write (replaced atomically)")
    q.add_argument("--previous", help=f"URL or directory of the deployed index (default ${PAGES_ENV}); "
                                      "omitted only before the first release")
    store(q)
    q = command(rel, "notes", "write the release notes",
                "Write the release notes: the pins, the targets, the emulated matrix's summary and the sha256 of "
                "every asset.",
                "llama-wheels release notes --matrix reports/matrix.json --out notes.md --tag v0.3.36-1")
    q.add_argument("--matrix", type=Path, help="the matrix job's matrix.json")
    q.add_argument("--out", type=Path, required=True, help="the notes file to write")
    store(q)
    q = command(rel, "publish", "make the draft public (the last step)",
                "Make the tag's draft release public with the notes; the last job of release.yml. A re-run finds "
                "it published and says so.",
                "llama-wheels release publish notes.md --releases ./releases --tag v0.3.36-1")
    q.add_argument("notes", type=Path, help="the file `release notes` wrote")
    store(q)
    q = command(rel, "doctor", "the repository settings a release needs",
                "List the repository settings a release needs (Pages source, the github-pages environment's tag "
                "rule, arm64 runners, workflow permissions) and the message each missing one fails with; --check "
                "reads them through the GitHub API (gh, GH_REPO).",
                "llama-wheels release doctor", "llama-wheels release doctor --check  # GH_REPO=owner/repo")
    q.add_argument("--check", action="store_true", help="check them on GitHub (gh; GH_REPO) instead of listing")
    q = command(rel, "rehearse", "run release.yml's job graph here",
                "Run release.yml's jobs in its order with the same commands: a directory stands in for the "
                "releases, a loopback HTTP server for Pages, finished wheels for the wheel jobs' builds.",
                "llama-wheels release rehearse --tag v1 --releases r --pages p --work w --wheels dist "
                "--cpu neoverse-n1")
    q.add_argument("--tag", required=True, help="the tag to rehearse")
    q.add_argument("--releases", type=Path, required=True, help="directory standing in for the releases")
    q.add_argument("--pages", type=Path, required=True, help="directory the loopback server serves (Pages)")
    q.add_argument("--work", type=Path, required=True, help="the run's artifacts and checkouts")
    q.add_argument("--wheels", type=Path, required=True,
                   help="finished wheels standing in for the wheel jobs' builds (built by `llama-wheels build`)")
    q.add_argument("--cpu", action="append", default=[], help="emulated CPU classes of the matrix job")
    q.add_argument("--fail-after", metavar="JOB", help="inject a failure after JOB (a re-run must resume)")
    return p


def _tag(args: argparse.Namespace) -> str:
    tag: str | None = args.tag or os.environ.get(TAG_ENV)
    if not tag:
        raise UserError(f"no tag: pass --tag or set {TAG_ENV}")
    return tag


def run(args: argparse.Namespace, config: Config, *, workflow: Path) -> int:
    """Run ``args``' release command; ``workflow`` is release.yml (relative to the checkout), which the
    rehearsal runs (named by the CLI: the generator is a sibling package)."""
    command = args.release_command
    if command == "doctor":
        from llama_wheels.release import doctor

        print(doctor.check_github() if args.check else doctor.checklist())
        return 0
    if command == "rehearse":
        from llama_wheels.release import rehearsal

        lines = rehearsal.rehearse(config, workflow=workflow, tag=args.tag, releases=args.releases.resolve(),
                                   pages=args.pages.resolve(), work=args.work.resolve(),
                                   wheels=args.wheels.resolve(), cpus=args.cpu, fail_after=args.fail_after)
        print(lines.splitlines()[-1])  # each job's lines were shown as progress (and are in the log)
        return 0
    from llama_wheels.core.cache import atomic_path
    from llama_wheels.release import publishing
    from llama_wheels.release.index import install_command
    from llama_wheels.release.store import open_store

    store = open_store(args.releases)
    if command == "plan":
        planned = publishing.release_plan(config, store.releases())
        print("\n".join(p.line() for p in planned))
        print(f"{sum(p.published is None for p in planned)} of {len(planned)} pin x target(s) new in this tag")
    elif command == "draft":
        print(publishing.draft(store, _tag(args)))
    elif command == "assets":
        print("\n".join(publishing.place_assets(store, _tag(args), args.dist.resolve(), args.report)))
    elif command == "index":
        out = args.out.resolve()
        previous = args.previous or os.environ.get(PAGES_ENV) or store.pages_url()
        families = publishing.release_index(store, _tag(args), previous, out)
        for family, wheels in families.items():
            print(f"{family}: {len(wheels)} wheel(s) -> "
                  f"{install_command(f'<pages>/{family}/simple', sorted({w.project for w in wheels}))}")
    elif command == "notes":
        text = publishing.release_notes(config, store, _tag(args), args.matrix)
        with atomic_path(args.out.resolve()) as tmp:
            tmp.write_text(text)
        print(f"{args.out}: {len(text.splitlines())} lines")
    elif command == "publish":
        if not args.notes.is_file():
            raise UserError(f"{args.notes}: no such file; `llama-wheels release notes --out {args.notes}` writes it")
        print(publishing.publish(store, _tag(args), args.notes.read_text()))
    return 0
