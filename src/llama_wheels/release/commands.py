"""The ``llama-wheels release ...`` subcommands: argument parsing and printing around ``publishing.py``
(the decisions), ``doctor.py`` (the repository settings) and ``rehearsal.py`` (the job graph run here)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from llama_wheels.config import Config
from llama_wheels.core.errors import UserError
from llama_wheels.release.store import ENV, GITHUB

# Where the tag comes from on GitHub's runners when --tag is not given.
TAG_ENV = "GITHUB_REF_NAME"
PAGES_ENV = "LLAMA_WHEELS_PAGES_URL"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("release", help="the release job graph as commands: plan, draft, assets, index, notes, "
                                       "publish; doctor (repository settings); rehearse (all of it, here)")
    rel = p.add_subparsers(dest="release_command", required=True)

    def store(q: argparse.ArgumentParser, *, tag: bool = True) -> None:
        q.add_argument("--releases", help=f"`{GITHUB}` or a directory standing in for the repository's releases "
                                          f"(default ${ENV})")
        if tag:
            q.add_argument("--tag", help=f"the release's tag (default ${TAG_ENV})")

    q = rel.add_parser("plan", help="every published pin x target: built new by this tag, or already published")
    store(q, tag=False)
    q = rel.add_parser("draft", help="the tag's release as a draft (a re-run finds it)")
    store(q)
    q = rel.add_parser("assets", help="upload DIST's wheels as <target>--<wheel>: published files are kept, "
                                      "a rebuild that differs is reported, a re-run uploads what is missing")
    q.add_argument("dist", type=Path, help="the downloaded wheel artifacts (searched recursively)")
    q.add_argument("--report", type=Path, action="append", default=[], help="a report file to attach")
    store(q)
    q = rel.add_parser("index", help="the PEP 503 index of every release's wheels, each earlier one verified "
                                     "against the sha256 the previous index published")
    q.add_argument("out", type=Path, help="the site directory to write (replaced atomically)")
    q.add_argument("--previous", help=f"URL or directory of the deployed index (default ${PAGES_ENV}); "
                                      "omitted only before the first release")
    store(q)
    q = rel.add_parser("notes", help="the release notes: pins, targets, matrix summary, sha256 of every asset")
    q.add_argument("--matrix", type=Path, help="the matrix job's matrix.json")
    q.add_argument("--out", type=Path, required=True, help="the notes file to write")
    store(q)
    q = rel.add_parser("publish", help="make the draft public with NOTES (last step; a re-run finds it done)")
    q.add_argument("notes", type=Path, help="the file `release notes` wrote")
    store(q)
    q = rel.add_parser("doctor", help="the repository settings a release needs, and what fails without each")
    q.add_argument("--check", action="store_true", help="check them on GitHub (gh; GH_REPO) instead of listing")
    q = rel.add_parser("rehearse", help="run release.yml's job graph here: a directory for the releases, "
                                        "a loopback HTTP server for Pages")
    q.add_argument("--tag", required=True)
    q.add_argument("--releases", type=Path, required=True, help="directory standing in for the releases")
    q.add_argument("--pages", type=Path, required=True, help="directory the loopback server serves (Pages)")
    q.add_argument("--work", type=Path, required=True, help="the run's artifacts and checkouts")
    q.add_argument("--wheels", type=Path, required=True,
                   help="finished wheels standing in for the wheel jobs' builds (built by `llama-wheels build`)")
    q.add_argument("--cpu", action="append", default=[], help="emulated CPU classes of the matrix job")
    q.add_argument("--fail-after", metavar="JOB", help="inject a failure after JOB (a re-run must resume)")


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
