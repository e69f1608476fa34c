"""Writing measured tables into the documentation pages (docs/*.md) that show them: between a page's
``<!-- name:start -->`` and ``<!-- name:end -->`` markers, or in place of a table found by its header."""

from __future__ import annotations

from pathlib import Path

from skd_tf.atomic import write_text

DOCS = Path(__file__).resolve().parents[1] / "docs"


def write_block(page: str, name: str, text: str) -> Path:
    """Replaces what is between the markers ``name`` of ``docs/page`` with ``text``; returns the page."""
    path = DOCS / page
    content = path.read_text()
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in content or end not in content:
        raise SystemExit(f"{path} has no {start} ... {end} block")
    head, rest = content.split(start, 1)
    tail = rest.split(end, 1)[1]
    write_text(path, f"{head}{start}\n{text.rstrip()}\n{end}{tail}")
    return path


def show(text: str, page: str, name: str, write: bool) -> None:
    """Prints a script's table and, with ``write`` (its ``--docs``), puts it in its block of ``docs/page``."""
    print(text)
    if write:
        print(f"{write_block(page, name, text).relative_to(DOCS.parent)} updated", flush=True)


def replace_table(page: str, header: str, table: str) -> Path:
    """Replaces the markdown table of ``docs/page`` whose first line starts with ``header`` by ``table``."""
    path = DOCS / page
    content = path.read_text()
    if header not in content:
        raise SystemExit(f"{path} has no table starting with {header!r}")
    start = content.index(header)
    end = content.find("\n\n", start)
    end = len(content) if end < 0 else end
    write_text(path, content[:start] + table.rstrip() + content[end:])
    return path
