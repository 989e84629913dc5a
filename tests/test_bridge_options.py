"""fiji_bridge pieces that need no Java: option specs and parsing, macro scanning, start-up checks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from engine.errors import InputError
from fiji_bridge import commands, display, macro, runtime
from fiji_bridge.errors import SetupError
from fiji_bridge.options import CommandSpec, Option, format_args, tokenize

# ----------------------------------------------------------------------------------------------- macro options


def test_tokenize_follows_imagej_syntax():
    assert tokenize("model=[/my models/a b] tile=256 overlap=0.25 tta") == [
        ("model", "/my models/a b"), ("tile", "256"), ("overlap", "0.25"), ("tta", None)]
    assert tokenize("  names=[] out=/x=y  ") == [("names", ""), ("out", "/x=y")]
    with pytest.raises(InputError, match="key=value"):
        tokenize("model=[/unterminated tile=3")


@pytest.mark.parametrize("name", commands.COMMANDS)
def test_every_command_spec_records_under_its_keys(name):
    """ImageJ's recorder keys a field by the first word of its label: it must be the option key."""
    spec = commands.spec(name)
    for option in spec.options:
        assert option.dialog_label.split()[0].lower() == option.key
        assert " " not in option.key
    assert len({o.key for o in spec.options}) == len(spec.options)
    # every default survives format -> parse
    defaults = {o.key: o.default for o in spec.options if not o.required}
    required = {o.key: "/x" for o in spec.options if o.required}
    assert spec.parse(spec.format({**defaults, **required})) == spec.validate({**defaults, **required})


def test_predict_options_parse_and_defaults():
    spec = commands.spec(commands.PREDICT)
    values = spec.parse("model=[/my models/nuclei] tile=256 overlap=0.5 output=both tta")
    assert values["model"] == "/my models/nuclei"
    assert values["tile"] == (256,)
    assert values["overlap"] == 0.5
    assert values["output"] == "both" and values["tta"] is True
    assert values["blend"] == "gaussian" and values["batch"] is None and values["device"] == "auto"
    assert spec.parse("model=/m tile=32,128,128")["tile"] == (32, 128, 128)
    assert spec.parse("model=/m tile=auto batch=auto")["tile"] is None
    old = spec.parse("model=/m tile=0 batch=0")  # macros recorded before "auto" keep working
    assert old["tile"] is None and old["batch"] is None
    assert spec.parse("model=/m")["tta"] is False  # an absent checkbox is unticked, as in ImageJ


@pytest.mark.parametrize("options, message", [
    ("model=/m modle=/x", r"unknown option 'modle' \(did you mean 'model'\?\); valid keys: model, image, tile, "
                          r"overlap, blend, output, batch, tta, device"),
    ("model=/m tile=abc", r"tile='abc' is not valid: expected a size in pixels"),
    ("model=/m overlap=2", r"overlap='2' is not valid: expected a number in \[0, 0.9\]"),
    ("model=/m output=masks", r"output='masks' is not valid: expected one of labels, probabilities, both"),
    ("model=/m batch=1.5", r"batch='1.5' is not valid: expected an integer >= 1 or auto"),
    ("model=/m batch=-1", r"batch='-1' is not valid: expected an integer >= 1 or auto"),
    ("model=/m tile=automatic", r"tile='automatic' is not valid: expected a size in pixels.*or auto"),
    ("model=/m tta=maybe", r"tta='maybe' is not valid: expected a checkbox"),
    ("tile=64", r"model is required"),
    ("model=/m model=/n", r"'model' is given twice"),
    ("model", r"'model' needs a value"),
])
def test_bad_predict_options_name_the_valid_keys_and_values(options, message):
    with pytest.raises(InputError, match=message):
        commands.spec(commands.PREDICT).parse(options)


def test_spec_rejects_unrecordable_definitions():
    with pytest.raises(ValueError, match="first word"):
        Option("out", "folder", "", "x", label="Output folder")
    with pytest.raises(ValueError, match="default to False"):
        Option("tta", "bool", True, "x")
    with pytest.raises(ValueError, match="one of its choices"):
        Option("blend", "choice", "max", "x", choices=("gaussian", "mean"))
    with pytest.raises(ValueError, match="duplicate"):
        CommandSpec("X", "x", (Option("a", "int", 1, "x"), Option("a", "int", 2, "x")))
    with pytest.raises(ValueError, match="needs an auto word"):
        Option("batch", "int", None, "x")


def test_format_writes_what_the_recorder_writes():
    spec = commands.spec(commands.PREDICT)
    text = spec.format({"model": "/my models/m", "tile": (64, 64), "tta": True})
    assert text == ("model=[/my models/m] image=[] tile=64,64 overlap=0.25 blend=gaussian output=labels batch=auto "
                    "tta device=auto out=[] cluster=[] precision=auto")
    assert spec.parse(text)["model"] == "/my models/m"


# Users' macros call these keys: they stay exactly as they are (new ones may be added).
TRAIN_MACRO_KEYS = ("images labels out network options patch epochs batch steps classes names lr optimizer schedule "
                    "loss normalization validation seed axes resume init device").split()


def test_train_spec_is_generated_from_the_engine_declarations():
    from engine.config import OPTIMIZERS, TrainConfig, train_options

    spec = commands.spec(commands.TRAIN)
    assert set(TRAIN_MACRO_KEYS) <= set(spec.keys)
    declared = {d.key: d for d in train_options() if d.key}
    assert list(declared) == list(spec.keys)  # nothing declared a second time here
    assert {d.name for d in declared.values()} <= set(TrainConfig.field_names())
    assert "unet2d" in spec.option("network").choices and spec.option("optimizer").choices == OPTIMIZERS
    assert spec.option("out").required and spec.option("lr").help == declared["lr"].help


def test_train_spec_shows_auto_and_reads_old_zeros():
    spec = commands.spec(commands.TRAIN)
    text = spec.format({"out": "/m"})
    for token in ("patch=auto", "batch=auto", "steps=auto", "classes=auto", "ignore=none"):
        assert f" {token} " in f" {text} "
    assert "=0 " not in text
    old = spec.parse("out=/m patch=0 batch=0 steps=0 classes=0")
    assert [old[k] for k in ("patch", "batch", "steps", "classes", "ignore")] == [None] * 5
    new = spec.parse("out=/m patch=auto batch=AUTO steps=3 classes=4 ignore=0")
    assert [new[k] for k in ("patch", "batch", "steps", "classes", "ignore")] == [None, None, 3, 4, 0]
    with pytest.raises(InputError, match=r"classes='1' is not valid: expected an integer >= 2 or auto"):
        spec.parse("out=/m classes=1")


def test_train_validation_and_augmentation_default_to_auto_and_zero_validation_means_none():
    spec = commands.spec(commands.TRAIN)
    defaults = spec.parse("out=/m")
    assert defaults["validation"] is None and defaults["augmentation"] == "auto"
    assert "validation=auto" in spec.format({**defaults, "validation": None})
    parsed = spec.parse("out=/m validation=0 augmentation=light")  # older macros: 0 held none out, not "auto"
    assert parsed["validation"] == 0.0 and parsed["augmentation"] == "light"
    assert spec.parse("out=/m validation=AUTO")["validation"] is None
    with pytest.raises(InputError, match=r"validation='some' is not valid: expected a number >= 0 or auto"):
        spec.parse("out=/m validation=some")


def test_train_macro_round_trip_keeps_every_fiji_option():
    """TrainConfig -> macro options (demo) -> dialog values -> TrainConfig (Fiji) gives the same config, for a
    config that sets every option Fiji offers to a non-default value."""
    from engine.config import TrainConfig, train_options

    config = TrainConfig(
        images="/data/my images", labels="/data/labels", axes="ZYX", out="/models/m 1", network="unet3d",
        network_options={"depth": 2, "norm": "instance", "rates": [6, 12]}, patch=[16, 64, 64], classes=3,
        class_names=["bg", "cell", "nucleus"], ignore_label=0, epochs=7, batch=3, steps_per_epoch=5,
        optimizer="sgd", lr=0.02, schedule="cosine", loss="dice", normalization="percentile",
        validation_fraction=0.1, seed=9, device="cpu", resume="/models/old", init_from="/models/base",
        freeze_encoder=True, time_budget="1h30m", precision="fp32",
        augmentation="strong,elastic=0.1 rotate=0.3:-30:30")
    offered = [d for d in train_options() if d.key]
    assert all(getattr(config, d.name) != d.default for d in offered)  # a new Fiji option must join this test
    text = commands.spec(commands.TRAIN).format(commands.train_values(config))
    assert "images=[/data/my images]" in text and "options=[depth=2 norm=instance rates=(6,12)]" in text
    values = commands.spec(commands.TRAIN).parse(text)
    assert TrainConfig(**commands.train_config_values(values)) == config


def test_demo_macro_trains_with_the_config():
    from engine.config import TrainConfig
    from fiji_bridge.demo import demo_macro

    config = TrainConfig(images="/d/train", out="/d/model", epochs=3, class_names=["background", "blob"], classes=2)
    line = demo_macro(config, "/d/test", "/d/pred").splitlines()[0]
    assert line.startswith('run("DeepSeg Train...", "images=/d/train ')
    values = commands.spec(commands.TRAIN).parse(line.split('", "', 1)[1].rsplit('");', 1)[0])
    assert TrainConfig(**commands.train_config_values(values)) == config


def test_network_options_text():
    from engine.options import format_mapping, parse_mapping

    assert parse_mapping("depth=3 filters=16 norm=batch") == {"depth": 3, "filters": 16, "norm": "batch"}
    assert parse_mapping("depth=3,filters=16") == {"depth": 3, "filters": 16}
    assert parse_mapping('{"depth": 2}') == {"depth": 2}
    assert parse_mapping("rates=(6,12,18) skips=[1, 2] on=true") == {"rates": [6, 12, 18], "skips": [1, 2], "on": True}
    assert parse_mapping("") == {}
    assert parse_mapping(format_mapping({"a": [1, 2], "b": "x", "c": 0.5})) == {"a": [1, 2], "b": "x", "c": 0.5}
    with pytest.raises(InputError, match="needs a value"):
        parse_mapping("depth")
    with pytest.raises(InputError, match="not valid JSON"):
        parse_mapping("{depth: 2}")


def test_format_args():
    assert format_args({"input": "/data/my images", "tile": 256, "tta": True, "gpu": False}) == \
        "input=[/data/my images] tile=256 tta"
    assert format_args(["input=/a b", "model=/m"]) == "input=[/a b] model=/m"
    assert format_args("x=1") == "x=1" and format_args(None) == ""


# ----------------------------------------------------------------------------------------------- macros


def test_called_commands_ignore_comments():
    code = 'open(p);\n// run("Invert");\n/* run("Gaussian Blur...", "sigma=1"); */\nrun("DeepSeg Predict...", "model=x");\n' \
           "run('Gaussian Blur...', 'sigma=2');"
    assert macro.called_commands(code) == ["DeepSeg Predict...", "Gaussian Blur..."]
    assert macro.missing_commands(code, commands.COMMANDS) == ["Gaussian Blur..."]


def test_user_dialogs_are_found_but_not_lookalikes():
    code = 'w = getStringWidth("a"); n = getNumber("n", 1); Dialog.create("x"); Dialog.show(); d = getDirectory("image");'
    assert macro.user_dialogs(code) == ["Dialog.show", "getNumber"]


def test_read_macro(tmp_path):
    path = tmp_path / "m.ijm"
    path.write_text('print("x");\n')
    assert macro.read_macro(path) == ('print("x");\n', "m.ijm")
    assert macro.read_macro(str(path))[1] == "m.ijm"
    assert macro.read_macro('print("y");') == ('print("y");', "macro")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        macro.read_macro(str(tmp_path / "missing.ijm"))


@pytest.mark.parametrize("name", ["predict_folder.ijm", "train_folder.ijm", "evaluate_folder.ijm"])
def test_ready_macros_use_only_deepseg_commands(name):
    """So `deepseg macro` runs them headless (no display needed)."""
    from fiji_bridge.cli import choose_mode

    code = (Path(__file__).resolve().parents[1] / "macros" / name).read_text()
    assert "getArgument()" in code
    assert choose_mode(code) == "headless"
    assert set(macro.called_commands(code)) <= set(commands.COMMANDS)


def test_cli_chooses_a_display_for_builtin_commands():
    from fiji_bridge.cli import choose_mode

    assert choose_mode('open(p); run("Gaussian Blur...", "sigma=2"); run("DeepSeg Predict...", "model=m");') == \
        "interactive"


# ----------------------------------------------------------------------------------------------- start-up checks


def test_memory_option():
    assert runtime.memory_option("8g") == "-Xmx8g"
    assert runtime.memory_option("512M") == "-Xmx512m"
    assert runtime.memory_option(2) == "-Xmx2048m"
    assert runtime.memory_option(None) is None
    with pytest.raises(ValueError, match="JVM size"):
        runtime.memory_option("lots")


def test_missing_java_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(SetupError, match="apt-get install default-jdk-headless"):
        runtime.find_java()


def test_missing_imagej_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSEG_IJ_JAR", str(tmp_path / "nope.jar"))
    with pytest.raises(SetupError, match="DEEPSEG_IJ_JAR"):
        runtime.find_imagej(None)
    monkeypatch.delenv("DEEPSEG_IJ_JAR")
    monkeypatch.setattr(runtime, "DEBIAN_IJ_JAR", tmp_path / "absent.jar")
    monkeypatch.delenv("FIJI_HOME", raising=False)
    with pytest.raises(SetupError, match="apt-get install libij-java"):
        runtime.find_imagej(None)


def test_imagej_argument_kinds(tmp_path):
    jar = tmp_path / "ij.jar"
    jar.write_bytes(b"")
    assert runtime.find_imagej(jar).kind == "jar"
    fiji = tmp_path / "Fiji.app"
    (fiji / "jars").mkdir(parents=True)
    (fiji / "jars" / "ij-1.54f.jar").write_bytes(b"")
    found = runtime.find_imagej(fiji)
    assert found.kind == "fiji" and found.jar.name == "ij-1.54f.jar" and found.uses_pyimagej
    assert runtime.find_imagej("sc.fiji:fiji:2.14.0").kind == "maven"
    with pytest.raises(FileNotFoundError):
        runtime.find_imagej(tmp_path / "missing" / "ij.jar")
    with pytest.raises(SetupError, match="Fiji.app"):
        runtime.find_imagej(tmp_path)


def test_no_display_gives_a_fix(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert not display.has_display()
    with pytest.raises(SetupError, match="mode='headless'"):
        runtime._prepare_display("gui", virtual_display=False)
    monkeypatch.setattr(display, "find_xvfb", lambda: None)
    with pytest.raises(SetupError, match="apt-get install xvfb"):
        runtime._prepare_display("interactive", virtual_display=None)
    assert runtime._prepare_display("headless", virtual_display=None) is None


def test_stale_display_is_not_a_display(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("DISPLAY", ":987")
    assert not Path("/tmp/.X11-unix/X987").exists()
    assert not display.has_display()


def test_importing_the_bridge_starts_no_jvm():
    from bridge_fixtures import run_python

    code = ("import fiji_bridge, fiji_bridge.convert, fiji_bridge.commands, fiji_bridge.session, fiji_bridge.cli, "
            "fiji_bridge.doctor, fiji_bridge.demo, jpype; fiji_bridge.find_java; "
            "print(jpype.isJVMStarted())")
    result = run_python(["-c", code], timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_shim_key_changes_with_sources_and_imagej(tmp_path, monkeypatch):
    import os

    from bridge_fixtures import run_python
    from fiji_bridge import shim

    jar_a = tmp_path / "a.jar"
    jar_a.write_bytes(b"a")
    jar_b = tmp_path / "b.jar"
    jar_b.write_bytes(b"bb")
    key = shim.build_key(jar_a)
    # the same in a fresh process (the cache is shared between processes: no per-process salt in the key)
    fresh = run_python(["-c", f"from fiji_bridge import shim; print(shim.build_key({str(jar_a)!r}))"], timeout=120)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.strip() == key
    assert shim.build_key(jar_b) != key
    stat = jar_a.stat()
    os.utime(jar_a, (stat.st_atime, stat.st_mtime + 10))  # ImageJ updated in place: same path and size
    assert shim.build_key(jar_a) != key
    assert shim.PLUGINS_CONFIG in shim.sources()
    config = shim.PLUGINS_CONFIG.read_text()
    for name in commands.COMMANDS:
        assert f'Plugins>deepseg, "{name}", deepseg.fiji.DeepSegCommand("{name}")' in config
    assert "_" in shim.JAR_NAME  # ImageJ loads only jars with an underscore from plugins/
    key = shim.build_key(jar_a)
    source = tmp_path / "java" / "Shim.java"  # a changed shim source gives a new key too
    source.parent.mkdir()
    source.write_text("class Shim {}")
    monkeypatch.setattr(shim, "JAVA_DIR", source.parent)
    monkeypatch.setattr(shim, "sources", lambda: [source])
    with_source = shim.build_key(jar_a)
    source.write_text("class Shim { int x; }")
    assert with_source != key and shim.build_key(jar_a) != with_source
