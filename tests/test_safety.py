"""Nothing loads a pickle: the package's loaders are pickle-free by construction. (The stored
artefacts of a real study are checked in test_harness.py; cluster.yaml's lack of secrets in
test_cluster.py.)"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*ROOT.glob("icam/**/*.py"), *ROOT.glob("analysis/**/*.py"),
                  *ROOT.glob("studies/*.py")])


def calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(
                func.value, ast.Name) else ""
            yield node, owner, name


def keyword(node: ast.Call, name: str):
    for kw in node.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def test_sources_were_found():
    assert len(SOURCES) > 20


def test_no_pickle_module_anywhere():
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                assert not any(n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib",
                                                   "cloudpickle", "shelve", "marshal")
                               or n.endswith("cloudpickle") for n in names), path


def test_torch_load_always_weights_only():
    for path in SOURCES:
        for node, owner, name in calls(ast.parse(path.read_text())):
            if owner == "torch" and name == "load":
                assert keyword(node, "weights_only") is True, f"{path}:{node.lineno}"


def test_numpy_load_never_allows_pickle():
    for path in SOURCES:
        for node, owner, name in calls(ast.parse(path.read_text())):
            if owner == "np" and name == "load":
                assert keyword(node, "allow_pickle") is False, f"{path}:{node.lineno}"
            assert name not in ("read_pickle", "to_pickle"), f"{path}:{node.lineno}"
            if owner == "yaml":
                assert name in ("safe_load", "safe_dump"), f"{path}:{node.lineno}"


def test_an_old_style_pickle_is_refused(tmp_path):
    """A state file that holds an arbitrary object is rejected by the checkpoint loader."""
    from fractions import Fraction

    import pytest
    import torch

    from icam.stages.files import load_state

    path = tmp_path / "state.pt"
    torch.save({"model": Fraction(1, 3)}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        load_state(path)
