"""mkdocs hooks: the site's pages for `README.md`, `benchmarks/RESULTS.md` and `CHANGELOG.md`, which live outside
docs/.

The pages in docs/ link to those files by their paths in the repository (`../benchmarks/RESULTS.md`), which is
right when they are read on a forge or in a clone; here each such link is pointed at the generated page, and the
generated pages' own links to `docs/...` at the pages beside them.
"""

from __future__ import annotations

import pathlib
import re

from mkdocs.structure.files import File

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUTSIDE = {
    "getting-started.md": ROOT / "README.md",
    "results.md": ROOT / "benchmarks" / "RESULTS.md",
    "changelog.md": ROOT / "CHANGELOG.md",
}
LINKS = [
    (re.compile(r"\]\((?:\.\./)*benchmarks/RESULTS\.md"), "](results.md"),
    (re.compile(r"\]\((?:\.\./)*CHANGELOG\.md"), "](changelog.md"),
    (re.compile(r"\]\((?:\.\./)+README\.md"), "](getting-started.md"),
    (re.compile(r"\]\(LICENSE\)"), "](https://www.apache.org/licenses/LICENSE-2.0)"),
    (re.compile(r"\]\((?:\.\./)?docs/"), "]("),
]


def on_files(files, config):
    for name, path in OUTSIDE.items():
        files.append(File.generated(config, name, content=path.read_text(encoding="utf-8")))
    return files


def on_page_markdown(markdown, page, config, files):
    for pattern, replacement in LINKS:
        markdown = pattern.sub(replacement, markdown)
    return markdown
