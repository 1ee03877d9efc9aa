"""Issue 11 item 9: models cached per-interval results under ``id(intervals)`` (an id is reused
once the object is freed: a later interval could get an earlier one's results) and hoststate
kept a module-global cache shared by every engine. State belongs to an engine's objects."""

from __future__ import annotations

import ast
from pathlib import Path

DETECT = Path(__file__).resolve().parents[2] / "netmon" / "detect"
MUTABLE_CALLS = {"dict", "list", "set", "defaultdict", "OrderedDict", "WeakKeyDictionary", "WeakValueDictionary"}


def _mutable(value: ast.AST | None) -> bool:
    if isinstance(value, (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)):
        return True
    if isinstance(value, ast.Call):
        func = value.func
        return (func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")) in MUTABLE_CALLS
    return False


def test_models_cache_nothing_by_object_id_and_keep_no_module_global_state():
    found = []
    for path in sorted(DETECT.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(DETECT.parents[1])
        found += [f"{where}:{n.lineno}: id() used" for n in ast.walk(tree)
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "id"]
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and _mutable(node.value):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
                found += [f"{where}:{node.lineno}: module-level mutable {n}" for n in names if not n.isupper()]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found += [f"{where}:{node.lineno}: {node.name} is memoised ({ast.unparse(d)})"
                          for d in node.decorator_list if "cache" in ast.unparse(d)]
    assert not found, "per-interval state outside the engine's objects (an id is reused; a module is shared):\n" \
        + "\n".join(found)
