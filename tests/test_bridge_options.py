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
    assert values["blend"] == "gaussian" and values["batch"] == 0 and values["device"] == "auto"
    assert spec.parse("model=/m tile=32,128,128")["tile"] == (32, 128, 128)
    assert spec.parse("model=/m tile=0")["tile"] is None
    assert spec.parse("model=/m")["tta"] is False  # an absent checkbox is unticked, as in ImageJ


@pytest.mark.parametrize("options, message", [
    ("model=/m modle=/x", r"unknown option 'modle' \(did you mean 'model'\?\); valid keys: model, image, tile, "
                          r"overlap, blend, output, batch, tta, device"),
    ("model=/m tile=abc", r"tile='abc' is not valid: expected a size in pixels"),
    ("model=/m overlap=2", r"overlap='2' is not valid: expected a number in \[0, 0.9\]"),
    ("model=/m output=masks", r"output='masks' is not valid: expected one of labels, probabilities, both"),
    ("model=/m batch=1.5", r"batch='1.5' is not valid: expected an integer >= 0"),
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


def test_format_writes_what_the_recorder_writes():
    spec = commands.spec(commands.PREDICT)
    text = spec.format({"model": "/my models/m", "tile": (64, 64), "tta": True})
    assert text == ("model=[/my models/m] image=[] tile=64,64 overlap=0.25 blend=gaussian output=labels batch=0 "
                    "tta device=auto")
    assert spec.parse(text)["model"] == "/my models/m"


def test_train_spec_covers_the_engine_config():
    from engine.config import TrainConfig

    spec = commands.spec(commands.TRAIN)
    mapped = {"images", "labels", "out", "network", "network_options", "patch", "epochs", "batch",
              "steps_per_epoch", "classes", "class_names", "lr", "optimizer", "schedule", "loss", "normalization",
              "validation_fraction", "seed", "axes", "resume", "init_from", "device"}
    assert mapped <= set(TrainConfig.field_names())
    assert len(spec.options) == len(mapped)
    assert "unet2d" in spec.option("network").choices


def test_network_options_text():
    assert commands.network_options("depth=3 filters=16 norm=batch") == {"depth": 3, "filters": 16, "norm": "batch"}
    assert commands.network_options("depth=3,filters=16") == {"depth": 3, "filters": 16}
    assert commands.network_options('{"depth": 2}') == {"depth": 2}
    assert commands.network_options("") == {}
    with pytest.raises(InputError, match="needs a value"):
        commands.network_options("depth")


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


def test_shim_key_changes_with_sources_and_imagej(tmp_path):
    from fiji_bridge import shim

    jar_a = tmp_path / "a.jar"
    jar_a.write_bytes(b"a")
    jar_b = tmp_path / "b.jar"
    jar_b.write_bytes(b"bb")
    assert shim.build_key(jar_a) == shim.build_key(jar_a)
    assert shim.build_key(jar_a) != shim.build_key(jar_b)
    assert shim.PLUGINS_CONFIG in shim.sources()
    config = shim.PLUGINS_CONFIG.read_text()
    for name in commands.COMMANDS:
        assert f'Plugins>deepseg, "{name}", deepseg.fiji.DeepSegCommand("{name}")' in config
    assert "_" in shim.JAR_NAME  # ImageJ loads only jars with an underscore from plugins/
