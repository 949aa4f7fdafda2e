"""What makes a stored stage result stale besides its parameters: the library code it loads and its data files."""
from __future__ import annotations

import os
from pathlib import Path

from asd_lib import provenance as V


def test_imports_are_followed_through_the_package_and_relative_imports():
    mods = V.module_closure("import numpy as np\n%matplotlib inline\nfrom asd_lib import fusion, plots as pl\n")
    assert {"asd_lib", "asd_lib.fusion", "asd_lib.plots"} <= set(mods)
    assert "asd_lib.finetune" not in mods and "asd_lib.backbones" not in mods
    assert V.module_closure("from asd_lib.fsutil import temp_dir") == ["asd_lib", "asd_lib.fsutil"]
    synth = V.module_closure("from asd_lib.synth import generate")
    assert {"asd_lib.synth", "asd_lib.synth.core", "asd_lib.synth.dsp", "asd_lib.synth.machines"} <= set(synth)
    lazy = V.imported_modules("def f():\n    from asd_lib.embed import pool_tokens\n    import asd_lib.data\n")
    assert lazy == {"asd_lib.embed", "asd_lib.data"}  # imports inside functions count: they run when called


def test_code_digest_is_per_module_content():
    d = V.code_digest("from asd_lib import fusion")
    assert d == V.code_digest("from asd_lib import fusion")
    path = Path(V.__file__).parent / "fusion.py"
    import hashlib

    assert d["asd_lib.fusion"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_data_digest_sees_deleted_added_and_touched_files(tmp_path: Path):
    assert V.data_digest(tmp_path / "nowhere") == "absent"
    (tmp_path / "a").mkdir()
    for name in ("a/x.wav", "a/y.wav"):
        (tmp_path / name).write_bytes(b"RIFF")
    first = V.data_digest(tmp_path)
    assert V.data_digest(tmp_path) == first
    st = (tmp_path / "a/x.wav").stat()
    os.utime(tmp_path / "a/x.wav", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    touched = V.data_digest(tmp_path)
    assert touched != first
    (tmp_path / "a/y.wav").unlink()
    assert V.data_digest(tmp_path) not in (first, touched)


def test_a_package_is_digested_as_a_whole(tmp_path: Path, monkeypatch):
    """A change in any file of a sub-package changes the digest of code that imports it, also in a file its
    ``__init__`` does not import (a ``__main__``, a module reached only by attribute); other modules stay out."""
    files = {
        "asd_lib/__init__.py": "",
        "asd_lib/other.py": "X = 1\n",
        "asd_lib/pkg/__init__.py": "from .a import A\n",
        "asd_lib/pkg/a.py": "A = 1\n",
        "asd_lib/pkg/b.py": "B = 1\n",
        "asd_lib/pkg/__main__.py": "from .a import A\n",
        "asd_lib/pkg/sub/__init__.py": "",
        "asd_lib/pkg/sub/c.py": "C = 1\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(V, "ROOT", tmp_path)
    for code in ("from asd_lib import pkg", "from asd_lib.pkg import A", "import asd_lib.pkg.a"):
        assert V.module_closure(code) == ["asd_lib", "asd_lib.pkg", "asd_lib.pkg.__main__", "asd_lib.pkg.a",
                                          "asd_lib.pkg.b", "asd_lib.pkg.sub", "asd_lib.pkg.sub.c"], code
    before = V.code_digest("from asd_lib import pkg")
    for i, name in enumerate(n for n in files if n.startswith("asd_lib/pkg/")):
        path = tmp_path / name
        path.write_text(path.read_text() + "# edited\n")
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + (i + 1) * 10**9))  # a new mtime, whatever the clock
        after = V.code_digest("from asd_lib import pkg")
        assert after != before, name
        before = after
    assert V.module_closure("from asd_lib import other") == ["asd_lib", "asd_lib.other"]  # the root is no unit


def test_the_split_packages_are_digested_file_by_file():
    import hashlib

    root = Path(V.__file__).parent
    for pkg, some_file in (("scorers", "stage.py"), ("finetune", "train.py"), ("online", "export.py")):
        modules = {f"asd_lib.{pkg}." + p.stem for p in (root / pkg).glob("*.py") if p.stem != "__init__"}
        d = V.code_digest(f"from asd_lib import {pkg}")
        assert modules | {f"asd_lib.{pkg}"} <= set(d), pkg
        path = root / pkg / some_file
        assert d[f"asd_lib.{pkg}.{path.stem}"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "asd_lib.finetune" not in V.module_closure("from asd_lib import scorers")
