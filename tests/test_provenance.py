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
