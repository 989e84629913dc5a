"""The public API: every name in ``engine.__all__`` is what it says, whatever was imported before, and
README's Python example runs as written (only the sizes made tiny)."""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import engine
from engine.io import write_image

README = Path(__file__).resolve().parents[1] / "README.md"


def _import_every_submodule() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(engine.__path__, prefix="engine."):
        importlib.import_module(info.name)
        names.append(info.name)
    return names


def test_every_exported_name_is_the_function_or_class_after_importing_every_submodule():
    before = {name: getattr(engine, name) for name in engine.__all__ if name != "__version__"}
    modules = _import_every_submodule()
    assert "engine.training" in modules and "engine.prediction" in modules
    for name in engine.__all__:
        if name == "__version__":
            continue
        value = getattr(engine, name)
        assert not isinstance(value, types.ModuleType), f"engine.{name} is a module"
        assert callable(value), f"engine.{name} is not callable"
        assert value is before[name], f"engine.{name} changed after importing the submodules"
    from engine import predict, train  # the names, not the submodules

    assert predict.__module__ == "engine.prediction" and train.__module__ == "engine.training"


def test_unknown_attribute_names_the_module():
    with pytest.raises(AttributeError, match="engine.*no attribute 'predictt'"):
        engine.predictt  # noqa: B018


def test_public_names_in_a_fresh_process_whatever_the_import_order():
    code = (
        "import engine.prediction, engine.training, engine\n"
        "from engine import predict, train, predict_file, build, list_networks, DeepSegError, InputError\n"
        "assert callable(predict) and callable(train) and callable(predict_file)\n"
        "assert issubclass(InputError, DeepSegError)\n"
        "assert 'unet2d' in list_networks() and build('unet2d', in_channels=1, classes=2) is not None\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def _readme_python_example() -> str:
    text = README.read_text()
    section = text[text.index("## Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "engine.predict(" in code and "engine.train(" in code
    small = code.replace("patch=256, epochs=100", "patch=32, epochs=1, steps_per_epoch=2, batch=2")
    assert small != code, "README's example changed: update the size substitution in this test"
    return small


def _write_example_files(folder: Path) -> None:
    from engine.synthetic import blobs

    for i in range(2):
        image, labels = blobs((48, 48), seed=i)
        write_image(folder / "train" / "Images" / f"c{i}.tif", engine.as_image(image, "YX"))
        write_image(folder / "train" / "Labels" / f"c{i}.tif", engine.as_image(labels.astype(np.uint8), "YX"))
    image, labels = blobs((48, 48), seed=9)
    write_image(folder / "cells.tif", engine.as_image(image, "YX"))
    engine.write_labels(folder / "cells-truth.tif", engine.as_image(labels.astype(np.uint8), "YX"))


def test_readme_python_example_runs_twice(tmp_path, monkeypatch):
    _import_every_submodule()
    _write_example_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    code = _readme_python_example()  # images="train/": a DeepMIB-style folder with Images/ and Labels/
    for _ in range(2):
        scope: dict = {}
        exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
        prediction, report = scope["prediction"], scope["report"]
        assert prediction.labels.shape == (48, 48)
        assert prediction.probabilities.shape == (2, 48, 48)
        assert report.confusion.sum() == 48 * 48
        assert (tmp_path / "cells-labels.tif").is_file() and (tmp_path / "confusion.png").is_file()
    labels = engine.read_labels(tmp_path / "cells-labels.tif")
    assert np.array_equal(np.asarray(labels), np.asarray(prediction.labels))
