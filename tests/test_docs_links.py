"""The documentation's links stay valid (pure Python: no torch, no detectron2).

Every relative Markdown link in the user documentation must name an existing file, and every
`#anchor` (in the same page or another one) must be the slug GitHub gives one of the target's
headings. `docs/<page>.md#<anchor>` references in code and YAML comments are held to the same
rule, and test files or test functions that the documentation names must exist.
"""

import re
import unicodedata

import pytest

from tests.helpers import ROOT

# Where references to the docs may live in code and config files.
CODE_SOURCES = ("clipzss_d2", "configs", "tools", "demo", "datasets", "scripts", "tests")
CODE_FILES = ("train_net.py", "Makefile")
CODE_SUFFIXES = {".py", ".yaml", ".yml", ".sh", ".cfg", ".toml", ""}

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"`+[^`]*`+")
# [text](target) and ![alt](target); the target may carry a "title".
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
CODE_DOC_REF = re.compile(r"(?<![\w/.-])(docs/[\w./-]+?\.md)(?:#([\w-]+))?")
TEST_FILE_REF = re.compile(r"(?<![\w/])(tests/test_\w+\.py)")
TEST_FUNC_REF = re.compile(r"`(test_\w+)`")


def doc_files():
    """The Markdown files users read, relative to the repository root."""
    names = ["README.md", "CHANGELOG.md", "demo/README.md", "datasets/README.md", "tools/README.md"]
    files = [ROOT / n for n in names if (ROOT / n).is_file()]
    files += sorted((ROOT / "docs").rglob("*.md"))
    files += sorted((ROOT / "clipzss_d2").rglob("README.md"))
    return files


def code_files():
    found = [ROOT / n for n in CODE_FILES if (ROOT / n).is_file()]
    for top in CODE_SOURCES:
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and path.suffix in CODE_SUFFIXES and "__pycache__" not in path.parts:
                found.append(path)
    return found


def rel(path):
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:  # a page written by a test
        return path.as_posix()


def strip_code(lines):
    """The lines outside fenced code blocks, with inline code spans blanked."""
    inside = False
    for number, line in enumerate(lines, 1):
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            yield number, line


def github_slug(text):
    """The anchor GitHub gives a heading whose Markdown source is `text`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images keep their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "")
    text = re.sub(r"(\*\*|__|\*|~~)", "", text)  # emphasis markers (single _ is kept, as GitHub)
    text = text.strip().lower()
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if char in " -" or category[0] in "LMN" or category == "Pc":
            kept.append(char)
    return "".join(kept).replace(" ", "-")


_ANCHORS = {}


def anchors(path):
    """Every anchor of a Markdown file: heading slugs (duplicates get -1, -2 ...) and <a name>."""
    _cache = _ANCHORS
    if path not in _cache:
        seen = {}
        found = set()
        for _, line in strip_code(path.read_text(encoding="utf-8").splitlines()):
            found.update(HTML_ANCHOR.findall(line))
            match = HEADING.match(line)
            if not match:
                continue
            slug = github_slug(match.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
        _cache[path] = found
    return _cache[path]


def check_target(source, target, base):
    """An error message for a relative link `target` written in `source`, or None."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("//"):
        return None  # http:, https:, mailto: ...: not checked offline
    path_part, _, anchor = target.partition("#")
    path_part = path_part.split("?", 1)[0]
    if path_part:
        resolved = (ROOT / path_part.lstrip("/")) if path_part.startswith("/") else base / path_part
        resolved = resolved.resolve()
        if not resolved.exists():
            return f"{rel(source)}: link to missing file {target!r}"
    else:
        resolved = source
    if anchor:
        if resolved.is_dir() or resolved.suffix.lower() != ".md":
            return f"{rel(source)}: anchor on a file that is not Markdown: {target!r}"
        if anchor not in anchors(resolved):
            return (
                f"{rel(source)}: no heading with anchor #{anchor} in {rel(resolved)} ({target!r})"
            )
    return None


def markdown_link_errors(path):
    errors = []
    for number, line in strip_code(path.read_text(encoding="utf-8").splitlines()):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            error = check_target(path, target, path.parent)
            if error:
                errors.append(f"{error} (line {number})")
    return errors


def code_reference_errors(path):
    errors = []
    text = path.read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), 1):
        for page, anchor in CODE_DOC_REF.findall(line):
            target = page + (f"#{anchor}" if anchor else "")
            error = check_target(path, target, ROOT)
            if error:
                errors.append(f"{error} (line {number})")
    return errors


def test_the_documentation_exists():
    names = {rel(p) for p in doc_files()}
    for required in (
        "README.md",
        "CHANGELOG.md",
        "docs/INSTALL.md",
        "docs/GETTING_STARTED.md",
        "docs/MODEL_ZOO.md",
        "docs/configuration.md",
        "docs/reproducibility.md",
        "docs/benchmarks.md",
        "docs/method.md",
    ):
        assert required in names


@pytest.mark.parametrize("path", doc_files(), ids=rel)
def test_relative_links_and_anchors_resolve(path):
    assert markdown_link_errors(path) == []


def test_doc_references_in_code_and_configs_resolve():
    errors = [e for path in code_files() for e in code_reference_errors(path)]
    assert errors == []


def test_no_code_comment_cites_a_readme_section():
    """Comments in the package, configs, tools, demos, datasets, scripts and tests point to
    docs/<page>.md#<anchor>, not to a README section by its title."""
    cited = re.compile(r"README[,:]?\s+(?:\"[A-Z]|[A-Z][a-z]+ [a-z])")
    found = [
        f"{rel(p)}:{n}: {line.strip()}"
        for p in code_files()
        for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if cited.search(line)
    ]
    assert found == []


def test_tests_named_in_the_documentation_exist():
    test_sources = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("*.py"))
    missing = []
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        for name in sorted(set(TEST_FILE_REF.findall(text))):
            if not (ROOT / name).is_file():
                missing.append(f"{rel(path)}: {name}")
        for name in sorted(set(TEST_FUNC_REF.findall(text))):
            if not re.search(rf"def {name}\b", test_sources):
                missing.append(f"{rel(path)}: {name}")
    assert missing == []


def test_the_readme_starts_with_the_two_commands():
    head = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:40]
    assert any("make main" in line for line in head)
    assert any("make test" in line for line in head)


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Install", "install"),
        ("Reproducibility and safety", "reproducibility-and-safety"),
        ("Benchmark (`tools/benchmark.py`)", "benchmark-toolsbenchmarkpy"),
        ("Python: `OpenVocabularyPredictor`", "python-openvocabularypredictor"),
        ("Padding is not image", "padding-is-not-image"),
        (
            "Where this implementation departs from the paper, and why",
            "where-this-implementation-departs-from-the-paper-and-why",
        ),
        ("Throughput at 512², 171 classes", "throughput-at-512²-171-classes"),
        ("**Bold** and [a link](x.md) and snake_case", "bold-and-a-link-and-snake_case"),
        ("Train, tune, test: the protocol", "train-tune-test-the-protocol"),
    ],
)
def test_github_slug(heading, slug):
    assert github_slug(heading) == slug


def test_duplicate_headings_get_numbered_anchors(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A\n## Notes\n```\n## Notes\n```\n## Notes\n## Notes\n", encoding="utf-8")
    assert anchors(page) == {"a", "notes", "notes-1", "notes-2"}


def test_a_broken_link_or_anchor_is_reported(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n[ok](#title) [bad anchor](#nowhere) [bad file](missing.md)\n"
        "`[in code](missing.md)`\n```\n[fenced](missing.md)\n```\n",
        encoding="utf-8",
    )
    errors = markdown_link_errors(page)
    assert len(errors) == 2
    assert "#nowhere" in errors[0] and "missing.md" in errors[1]
