"""The documentation holds together: every relative link in README.md and
docs/*.md reaches a file of the repository (and, with ``#anchor``, a
heading of it, by GitHub's anchor rules), the README stays a short user's
page, and it opens with the two commands a newcomer runs first.

The link checker is checked too: it must report a broken link of each kind
in a document written to fail, and compute GitHub's anchors for headings
whose anchors are known from github-slugger's own fixtures.
"""

from __future__ import annotations

import re
import unicodedata
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

README_MAX_LINES = 400
FIRST_COMMANDS = (
    "pip install . && nvmefast bench",
    "pip install -e '.[test]' && cargo test && python -m pytest",
)

_FENCE = re.compile(r"^(`{3,}|~{3,})")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# [text](target "title") and ![alt](target); the text may hold one level of brackets.
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]"  # [text] or ![alt]
    r"\(\s*(<[^>]*>|[^()\s]*(?:\([^()\s]*\)[^()\s]*)*)"  # (target, balanced parentheses allowed
    r"(?:\s+\"[^\"]*\")?\s*\)"  # "optional title")
)
_REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True)
class Link:
    """A link as written, and where."""

    source: Path
    line: int
    target: str


def prose_lines(text: str) -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, numbered from 1."""
    out: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        # Fences may be indented (inside list items).
        m = _FENCE.match(line.lstrip())
        if fence is None and m:
            fence = m.group(1)
            continue
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        out.append((number, line))
    return out


def links(path: Path) -> list[Link]:
    """Every inline link, image and reference definition outside code."""
    found: list[Link] = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        # Code spans are not links, but a link's text may contain one.
        line = _CODE_SPAN.sub(lambda m: "x" * len(m.group(0)), line)
        for m in _INLINE_LINK.finditer(line):
            found.append(Link(path, number, m.group(1).strip("<>")))
        definition = _REFERENCE_DEF.match(line)
        if definition:
            found.append(Link(path, number, definition.group(1).strip("<>")))
    return found


def heading_text(markdown: str) -> str:
    """What a heading renders as: code spans, links and emphasis reduced to their text."""
    text = _CODE_SPAN.sub(lambda m: m.group(2).strip(), markdown)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    return text.replace("*", "")


def github_slug(text: str) -> str:
    """GitHub's anchor for a heading's text (github-slugger): lowercased;
    letters, marks, numbers, connector punctuation, '-' and ' ' kept; each
    space a '-'."""
    kept = []
    for ch in text.lower():
        category = unicodedata.category(ch)
        if category[0] in "LMN" or category == "Pc" or ch in "- ":
            kept.append(ch)
    return "".join(kept).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a page: one per heading, duplicates suffixed
    -1, -2, ... as github-slugger does; plus explicit <a name/id> anchors."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    text = path.read_text(encoding="utf-8")
    for _, line in prose_lines(text):
        m = _HEADING.match(line)
        if m:
            base = slug = github_slug(heading_text(m.group(2)))
            while slug in seen:
                seen[base] += 1
                slug = f"{base}-{seen[base]}"
            seen[slug] = 0
            out.add(slug)
        out.update(_HTML_ANCHOR.findall(line))
    return out


def broken(link: Link, root: Path) -> str | None:
    """Why ``link`` does not resolve within ``root``, or None when it does."""
    target = link.target
    if not target or _SCHEME.match(target) or target.startswith("//"):
        return None  # a URL: not checked here (no network in tests)
    path_part, _, fragment = target.partition("#")
    path_part = urllib.parse.unquote(path_part)
    if path_part.startswith("/"):
        return "an absolute path: link relative to the page"
    dest = (link.source.parent / path_part).resolve() if path_part else link.source
    if not dest.is_relative_to(root.resolve()):
        return "outside the repository"
    if not dest.exists():
        return "no such file"
    if fragment:
        if dest.is_dir() or dest.suffix.lower() != ".md":
            return "an anchor into a file that has no headings"
        if urllib.parse.unquote(fragment) not in anchors(dest):
            return f"no heading with anchor #{fragment} in {dest.name}"
    return None


def report(root: Path, paths: list[Path]) -> list[str]:
    """One line per broken link in ``paths``."""
    out = []
    for path in paths:
        for link in links(path):
            why = broken(link, root)
            if why is not None:
                out.append(f"{path.relative_to(root)}:{link.line}: ({link.target}) {why}")
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: Path) -> None:
    problems = report(ROOT, [doc])
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    linked = {
        (link.source.parent / urllib.parse.unquote(link.target.partition("#")[0])).resolve()
        for doc in (ROOT / "README.md", ROOT / "docs" / "README.md")
        for link in links(doc)
        if not _SCHEME.match(link.target) and link.target.partition("#")[0]
    }
    orphans = [p.name for p in DOCS[1:] if p.name != "README.md" and p.resolve() not in linked]
    assert not orphans, f"docs pages linked from neither README.md nor docs/README.md: {orphans}"


def test_readme_is_a_short_page() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines; keep it under {README_MAX_LINES} and move depth into docs/"
    )


def test_readme_opens_with_the_two_commands() -> None:
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current.append(line)
    assert len(blocks) >= 2, "README.md has fewer than two code blocks"
    assert ["\n".join(b).strip() for b in blocks[:2]] == list(FIRST_COMMANDS)


# -- the checker itself ------------------------------------------------------

@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        # From github-slugger's test fixtures (the library GitHub's anchors follow).
        ("heading with a - dash", "heading-with-a---dash"),
        ("heading with an _ underscore", "heading-with-an-_-underscore"),
        ("heading with a period.txt", "heading-with-a-periodtxt"),
        (
            "exchange.bind_headers(exchange, routing [, bindCallback])",
            "exchangebind_headersexchange-routing--bindcallback",
        ),
        ("I ♥ unicode", "i--unicode"),
        ("en–dash", "endash"),
        ("Привет non-latin 你好", "привет-non-latin-你好"),
        ("apostrophe’s should be trimmed", "apostrophes-should-be-trimmed"),
        # Inline markup renders to its text first.
        ("What `nvmefast bench` prints", "what-nvmefast-bench-prints"),
        ("The server path: `nvmefast bench --vfio-user`", "the-server-path-nvmefast-bench---vfio-user"),
        ("**Bold** and [a link](x.md)", "bold-and-a-link"),
    ],
)
def test_github_slug(heading: str, anchor: str) -> None:
    assert github_slug(heading_text(heading)) == anchor


def test_duplicate_headings_get_numbered_anchors(tmp_path: Path) -> None:
    # github-slugger's repetition fixtures, in order.
    page = tmp_path / "page.md"
    headings = ["echo", "echo", "echo 1", "echo-1", "echo", "foxtrot-1", "foxtrot", "foxtrot"]
    page.write_text("".join(f"# {h}\n\n" for h in headings))
    assert anchors(page) == {"echo", "echo-1", "echo-1-1", "echo-1-2", "echo-2", "foxtrot-1", "foxtrot", "foxtrot-2"}


def test_the_checker_reports_every_kind_of_broken_link(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## A `code` heading\n")
    (tmp_path / "LICENSE-MIT").write_text("MIT\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Page\n\n"
        "[fine](other.md) [fine anchor](other.md#a-code-heading) [here](#page) [up](../LICENSE-MIT)\n"
        "[web](https://example.org/missing.md) [mail](mailto:a@example.org)\n"
        "[missing file](nothere.md)\n"
        "[missing anchor](other.md#no-such-heading)\n"
        "![missing image](img/plot.png)\n"
        "[own missing anchor](#nowhere)\n"
        "[escapes](../../outside.md)\n"
        "[anchor into a non-page](../LICENSE-MIT#x)\n"
        "[`code` in the text](gone.md)\n"
        "[ref]: also-gone.md\n"
        "`[in a code span](ignored.md)`\n\n"
        "```\n[in a fence](ignored.md)\n```\n"
        "  ~~~\n  [in an indented fence](ignored.md)\n  ~~~\n"
    )
    problems = report(tmp_path, [page])
    assert [p.split(" (")[1].split(")")[0] for p in problems] == [
        "nothere.md",
        "other.md#no-such-heading",
        "img/plot.png",
        "#nowhere",
        "../../outside.md",
        "../LICENSE-MIT#x",
        "gone.md",
        "also-gone.md",
    ]
    assert [int(p.split(":")[1]) for p in problems] == [5, 6, 7, 8, 9, 10, 11, 12]
