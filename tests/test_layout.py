"""The package's shape: imports flow one way between its folders, no module imports itself in a circle, and
nothing is installed outside the ``skd_tf`` namespace."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "skd_tf"

# Top to bottom; a unit may import its own level and the levels below, never above. ``benchmark`` is the
# leaf: it runs on a board where nothing else of skd_tf (or TensorFlow) is installed.
LEVELS = [("cli",), ("demo",), ("predict", "importing"), ("export",), ("distill",), ("losses",), ("training",),
          ("evaluation",), ("data", "models"), ("config",), ("console", "atomic"), ("benchmark",)]
LEVEL = {unit: i for i, units in enumerate(LEVELS) for unit in units}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every skd_tf module ``path`` imports, at module level or inside a function, absolute or relative."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [f"{target}.{a.name}" for a in node.names]  # a module, or an object of ``target``
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        found.update(c for c in candidates if c.startswith("skd_tf."))
    return found


def _graph() -> dict[str, set[str]]:
    """module -> the skd_tf modules it imports (``skd_tf.x.name`` is the module x.name, or an object of x)."""
    raw = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}
    return {m: {t if t in raw else t.rsplit(".", 1)[0] for t in targets} - {m} for m, targets in raw.items()}


def _unit(module: str) -> str:
    return module.split(".")[1]


def test_every_folder_has_a_level():
    units = {_unit(m) for m in _graph() if m.count(".") >= 1}
    assert units <= set(LEVEL), f"folders without a level in LEVELS: {sorted(units - set(LEVEL))}"


def test_imports_flow_one_way():
    upward = sorted(f"{m} imports {t}" for m, targets in _graph().items() if m.count(".") >= 1
                    for t in targets if t.count(".") >= 1 and _unit(t) != _unit(m) and LEVEL[_unit(t)] < LEVEL[_unit(m)])
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_module_imports_itself_in_a_circle():
    edges = _graph()
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for t in sorted(edges.get(m, ())):
            if state.get(t) == "open":
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_nothing_is_installed_outside_the_skd_tf_namespace(tmp_path):
    """A user's own ``export`` module must not collide with ours (#31): only ``skd_tf`` is importable."""
    probe = "import importlib.util as u; print(u.find_spec('export') is None, u.find_spec('skd_tf.export') is not None)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_benchmarks_and_tests_import_by_package_not_by_sys_path():
    """The benchmark scripts are the package ``benchmarks`` (``python -m benchmarks.<name>``): neither they nor the
    tests reach each other by editing ``sys.path`` (code run elsewhere, in a string, may)."""
    root = PACKAGE.parent
    edits = []
    for path in sorted((root / "benchmarks").glob("*.py")) + sorted((root / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            target = node.func.value if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) else None
            if isinstance(target, ast.Attribute) and target.attr == "path" and getattr(target.value, "id", "") == "sys":
                edits.append(f"{path.relative_to(root)}:{node.lineno}")
    assert edits == []
    assert (root / "benchmarks" / "__init__.py").is_file()


def test_atomic_writes_leave_the_old_file_or_the_new_one(tmp_path):
    """skd_tf.atomic: every writer's one mechanism. A block that raises leaves the old content and no
    temporary file; a finished one replaces files and whole directories (a SavedModel); the file mode is
    the usual one, not a temporary file's private 0600."""
    from skd_tf.atomic import atomic_path, write_text

    target = tmp_path / "eval.json"
    write_text(target, "old")
    try:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]
    write_text(target, "new")
    assert target.read_text() == "new" and (target.stat().st_mode & 0o777) == 0o666 & ~_umask()
    with atomic_path(tmp_path / "model.keras") as tmp:
        assert tmp.name == "model.incoming.keras"  # Keras checks the suffix of what it saves
        tmp.write_text("k")
    folder = tmp_path / "saved_model"
    (folder / "variables").mkdir(parents=True)
    (folder / "old.pb").write_text("old")
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        (tmp / "saved_model.pb").write_text("new")
    assert sorted(p.name for p in folder.iterdir()) == ["saved_model.pb"]


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_longest_first_list_names_collected_tests(request):
    """conftest.LONGEST_FIRST orders `make test`'s slowest tests first; a renamed test would silently drop out."""
    from tests.conftest import LONGEST_FIRST, collected_name

    if len(request.session.items) < 100:  # a single file or test was asked for
        pytest.skip("needs the whole suite collected")
    collected = {collected_name(item) for item in request.session.items}
    assert [name for name in LONGEST_FIRST if name not in collected] == []
    assert [collected_name(item) for item in request.session.items[:len(LONGEST_FIRST)]] == list(LONGEST_FIRST)
