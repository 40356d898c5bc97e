"""The documentation's links resolve.

Every relative link in README.md and docs/*.md names a file or directory of this repository
(never one outside it, never a git-ignored one a clone would not have), and every
``#anchor`` names a heading of the Markdown file it points into, by GitHub's slug rules.
Every test function the documents name still exists. Links inside code blocks and code
spans are not links; ``http(s)://`` and ``mailto:`` links are not checked (no network).
"""

from __future__ import annotations

import fnmatch
import functools
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]

EXTERNAL_SCHEMES = frozenset({"http", "https", "mailto"})

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")  # a run of n backticks is closed by a run of n
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]"  # [text], one level of nested brackets allowed
    r"\(\s*(<[^>]*>|[^\s()]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)"
)  # (target "title")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")  # [label]: target
_HTML_LINK = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']+)["']""")
_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SLUG_CATEGORIES = ("L", "M", "Nd", "Nl", "Pc")  # Unicode general categories a slug keeps


@dataclass(frozen=True)
class Link:
    source: Path
    line: int
    target: str


def documents(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def _prose(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if fence is None:
            if match:
                fence = match[1]
                continue
            yield number, line
        elif (
            match
            and match[1][0] == fence[0]
            and len(match[1]) >= len(fence)
            and not line.strip()[len(match[1]) :].strip()
        ):
            fence = None


def links(path: Path) -> list[Link]:
    found = []
    for number, line in _prose(path.read_text(encoding="utf-8")):
        line = _CODE_SPAN.sub("code", line)  # `[a](b)` in a code span is not a link
        targets = [m[1] for m in _INLINE_LINK.finditer(line)]
        targets += [m[1] for m in _REFERENCE.finditer(line)]
        targets += [m[1] for m in _HTML_LINK.finditer(line)]
        found += [Link(path, number, t.removeprefix("<").removesuffix(">")) for t in targets]
    return found


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text as rendered (links reduced to their text,
    code spans to their content, emphasis dropped), lower-cased; every character removed
    that is not a letter, mark, decimal or letter number, connector (``_``), ASCII hyphen or
    space; each space made a hyphen (github-slugger's rules)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "").strip()
    kept = (
        c for c in text.lower() if c in "- " or unicodedata.category(c).startswith(_SLUG_CATEGORIES)
    )
    return "".join(kept).replace(" ", "-")


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    """Anchors of a Markdown file's ATX headings (the kind these documents use; any other
    heading is missing here, so a link to it fails rather than passes). A repeated slug gets
    ``-1``, ``-2`` ... as on GitHub."""
    seen: dict[str, int] = {}
    result = set()
    for _, line in _prose(path.read_text(encoding="utf-8")):
        match = _ATX_HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match[1] or "")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(result)


def _git_ignored(root: Path, paths: list[Path]) -> set[Path]:
    """Which of ``paths`` the repository's .gitignore excludes: a clone would not have them.
    Read from the file rather than asked of git, so that this stays a unit test (no process);
    the patterns there are plain names, globs and directories (``bench/.work/``)."""
    ignore_file = root / ".gitignore"
    if not ignore_file.exists():
        return set()
    patterns = [
        line.strip()
        for line in ignore_file.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: Path) -> bool:
        relative = path.relative_to(root).as_posix()
        parts = relative.split("/")
        for pattern in patterns:
            bare = pattern.strip("/")
            if "/" in bare:  # anchored at the root: a path prefix
                if relative == bare or relative.startswith(bare + "/"):
                    return True
            elif any(fnmatch.fnmatchcase(part, bare) for part in parts):
                return True
        return False

    return {path for path in paths if ignored(path)}


def problems(root: Path, docs: list[Path]) -> list[str]:
    """One line per broken link: ``file:line: target: what is wrong``."""
    found: list[str] = []
    resolved_targets: dict[Path, list[str]] = {}
    for link in (link for doc in docs for link in links(doc)):
        where = f"{link.source.relative_to(root).as_posix()}:{link.line}: {link.target}"
        parts = urlsplit(link.target)
        if parts.scheme in EXTERNAL_SCHEMES:
            continue
        if parts.scheme or parts.netloc:
            found.append(f"{where}: not a relative link")
            continue
        path_part = unquote(parts.path)
        if path_part.startswith("/"):
            found.append(f"{where}: an absolute path; write it relative to this file")
            continue
        target = (link.source.parent / path_part).resolve() if path_part else link.source
        if not target.is_relative_to(root):
            found.append(f"{where}: points outside the repository")
            continue
        if not target.exists():
            found.append(f"{where}: no such file")
            continue
        resolved_targets.setdefault(target, []).append(where)
        if not parts.fragment:
            continue
        if target.suffix != ".md" or not target.is_file():
            found.append(f"{where}: an anchor into something that is not a Markdown file")
        elif unquote(parts.fragment) not in anchors(target):
            found.append(f"{where}: no such heading in {target.relative_to(root).as_posix()}")
    for ignored in _git_ignored(root, list(resolved_targets)):
        found += [
            f"{where}: git-ignored, a clone does not have it" for where in resolved_targets[ignored]
        ]
    return found


def test_every_relative_link_resolves_inside_the_repository() -> None:
    docs = documents()
    assert len(docs) >= 8, docs  # README.md and the docs/ pages: the glob found them
    assert sum(len(links(doc)) for doc in docs) > 100
    found = problems(ROOT, docs)
    assert not found, "broken links:\n" + "\n".join(found)


def test_every_test_the_documents_name_exists() -> None:
    defined = {
        name
        for path in (ROOT / "tests").rglob("*.py")
        for name in re.findall(
            r"^\s*(?:async\s+)?def (test_\w+)", path.read_text(encoding="utf-8"), re.M
        )
    }
    named = {
        (doc.relative_to(ROOT).as_posix(), name)
        for doc in documents()
        for name in re.findall(r"`(test_\w+)`", doc.read_text(encoding="utf-8"))
    }
    assert len(named) > 50
    missing = sorted(f"{doc}: {name}" for doc, name in named if name not in defined)
    assert not missing, "no such test function:\n" + "\n".join(missing)


def module_map(text: str) -> dict[str, set[str]]:
    """docs/architecture.md's module map: package directory → the modules its row names."""
    rows = re.findall(r"^\| \[`(service/\w+)/`\]\([^)]*\) \| ([^|]*) \|", text, re.M)
    return {package: set(re.findall(r"`(\w+)`", modules)) for package, modules in rows}


def test_the_module_map_names_every_module_and_no_other() -> None:
    """A newcomer reads the tree from docs/architecture.md: each subpackage has its row,
    and each row names exactly the modules on disk (``__init__`` only where it holds code)."""
    documented = module_map((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))
    on_disk = {
        f"service/{package.name}": {
            path.stem
            for path in package.glob("*.py")
            if path.stem != "__init__" or "def " in path.read_text(encoding="utf-8")
        }
        for package in sorted((ROOT / "service").iterdir())
        if (package / "__init__.py").exists()
    }
    assert len(on_disk) >= 9, on_disk
    assert documented == on_disk


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Security model", "security-model"),
        ("One caller's digits, step by step", "one-callers-digits-step-by-step"),
        ("Verifiers, not digits", "verifiers-not-digits"),
        ("Migrating from the tutorial (`AES_SECRET`)", "migrating-from-the-tutorial-aes_secret"),
        ("The `ivr-vault` command", "the-ivr-vault-command"),
        ("1. Intro & set-up", "1-intro--set-up"),
        ("Webhook → backend", "webhook--backend"),
        ("See [the policy](../policies/x.hcl) **now**", "see-the-policy-now"),
        ("Ünïcode Überschrift", "ünïcode-überschrift"),
        # from github-slugger's own fixtures
        ("heading with a - dash", "heading-with-a---dash"),
        (
            "exchange.bind_headers(exchange, routing [, bindCallback])",
            "exchangebind_headersexchange-routing--bindcallback",
        ),
        ("I ♥ unicode", "i--unicode"),
        ("en\u2013dash", "endash"),
        ("apostrophe\u2019s should be trimmed", "apostrophes-should-be-trimmed"),
        ("Привет non-latin 你好", "привет-non-latin-你好"),
        ("a² ½ b", "a--b"),
    ],
)
def test_github_slugs(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


def test_the_checker_finds_every_kind_of_broken_link(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "code.py").write_text("x = 1\n")
    (tmp_path / "docs" / "guide.md").write_text(
        "# Guide\n\n## Rotate\n\n## Rotate\n\n```md\n# Not a heading\n```\n"
        "See [back](../README.md#top-level).\n"
    )
    (tmp_path / "README.md").write_text(
        "# Top level\n\n"
        "[ok](docs/guide.md) [ok](docs/guide.md#rotate-1) [ok](src/) [ok](#top-level)\n"
        "[external](https://example.com/nowhere) [mail](mailto:a@example.com)\n"
        "`[in a code span](nowhere.md)`\n"
        "```\n[in a fence](nowhere.md)\n```\n"
        "[missing](docs/missing.md)\n"
        "[outside](../shared/DESIGN.md)\n"
        "[absolute](/etc/passwd)\n"
        "[file scheme](file:///etc/passwd)\n"
        "[bad anchor](docs/guide.md#rotate-2) [fenced heading](docs/guide.md#not-a-heading)\n"
        "[anchor into code](src/code.py#L1)\n"
        "[ref]: docs/gone.md\n"
        '<img src="img/missing.png">\n'
    )
    found = problems(tmp_path, documents(tmp_path))
    assert found == [
        "README.md:9: docs/missing.md: no such file",
        "README.md:10: ../shared/DESIGN.md: points outside the repository",
        "README.md:11: /etc/passwd: an absolute path; write it relative to this file",
        "README.md:12: file:///etc/passwd: not a relative link",
        "README.md:13: docs/guide.md#rotate-2: no such heading in docs/guide.md",
        "README.md:13: docs/guide.md#not-a-heading: no such heading in docs/guide.md",
        "README.md:14: src/code.py#L1: an anchor into something that is not a Markdown file",
        "README.md:15: docs/gone.md: no such file",
        "README.md:16: img/missing.png: no such file",
    ]


def test_links_to_git_ignored_files_are_refused() -> None:
    paths = [
        ROOT / ".venv",
        ROOT / "bench" / ".work" / "quick",
        ROOT / "service" / "x.pyc",
        ROOT / "README.md",
        ROOT / "bench" / "RESULTS.md",
    ]
    assert _git_ignored(ROOT, paths) == set(paths[:3])
