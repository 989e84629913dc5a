"""Model folders: round trip, verification of weights, incompatible versions, atomic writes, real kills."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.errors import ModelFileError
from engine.model_files import load_model, model_config, save_model
from engine.networks import build
from engine.normalization import Normalization


def _net():
    torch.manual_seed(0)
    return build("unet2d", in_channels=2, classes=3, depth=2, filters=4).eval()


def _save(tmp_path, name="m"):
    net = _net()
    path = save_model(net, tmp_path / name, patch=(32, 32), axes="CYX", class_names=["bg", "a", "b"],
                      normalization=Normalization("zscore", mean=[1.0, 2.0], std=[3.0, 4.0]))
    return net, path


def test_round_trip_rebuilds_from_the_folder_alone(tmp_path):
    net, path = _save(tmp_path)
    loaded = load_model(path, device="cpu")
    x = torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), loaded.network(x), rtol=0, atol=0)
    assert loaded.class_names == ["bg", "a", "b"] and loaded.patch == (32, 32)
    assert loaded.normalization.mean == [1.0, 2.0]
    info = loaded.describe()
    assert info["network"] == "unet2d" and info["parameters"] == sum(p.numel() for p in net.parameters())


def _weights_file(folder, which="best"):
    return folder / json.loads((folder / "config.json").read_text())["weights"][which]["file"]


def test_tampered_weights_are_refused(tmp_path):
    _, path = _save(tmp_path)
    weights = _weights_file(path)
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="does not match the checksum"):
        load_model(path)


def test_newer_format_and_foreign_folders_are_refused(tmp_path):
    _, path = _save(tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["format_version"] = 99
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="format_version 99"):
        load_model(path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="has no config.json"):
        load_model(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing")


def test_weights_that_do_not_fit_the_network_are_refused(tmp_path):
    _, path = _save(tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["network_options"]["filters"] = 8
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="do not fit network"):
        load_model(path)


def test_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    folder = tmp_path / "kept"
    save_model(_filled(1), folder, **SMALL)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken)  # fails once the new weights file is being written
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, "never")
    with pytest.raises(OSError, match="disk full"):
        save_model(_filled(2), folder, **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_weights_contain_no_pickle(tmp_path):
    _, path = _save(tmp_path)
    data = _weights_file(path).read_bytes()
    assert int.from_bytes(data[:8], "little") > 0  # safetensors: 8-byte header length, then JSON
    assert data[8:9] == b"{"


def test_model_config_checks_class_names():
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        model_config(_net(), patch=(8, 8), normalization=Normalization("none"), axes="YX", class_names=["a", "b"])


# ------------------------------------------------------------------------------ updating a folder


def _filled(value: float) -> torch.nn.Module:
    """A small network whose every parameter and buffer equals ``value`` (tells saved versions apart)."""
    net = build("unet2d", in_channels=1, classes=2, depth=2, filters=4)
    with torch.no_grad():
        for tensor in net.state_dict().values():
            tensor.fill_(value)
    return net


def _value(folder, which="best") -> float:
    """The one value every tensor of the folder's ``which`` weights holds."""
    values = {float(t.float().unique()[0]) for t in load_model(folder, device="cpu", which=which).network.state_dict().values()}
    assert len(values) == 1, values
    return values.pop()


SMALL = dict(patch=(16, 16), axes="YX", normalization=Normalization("none"))


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def _referenced(folder):
    weights = json.loads((folder / "config.json").read_text())["weights"]
    return sorted({"config.json", *(entry["file"] for entry in weights.values())})


def test_updates_use_content_addressed_files_and_remove_unused_ones(tmp_path):
    folder = tmp_path / "m"
    save_model(_filled(1), folder, which="last", **SMALL)
    save_model(_filled(1), folder, which="best", **SMALL)
    assert len(_names(folder)) == 2  # equal best and last share one file
    name = _weights_file(folder).name
    assert name.startswith("weights-") and name.endswith(".safetensors") and len(name) == len("weights-") + 16 + 12
    save_model(_filled(2), folder, which="last", **SMALL)
    assert (_value(folder, "best"), _value(folder, "last")) == (1, 2)
    assert _names(folder) == _referenced(folder) and len(_names(folder)) == 3
    save_model(_filled(3), folder, which="best", **SMALL)
    assert (_value(folder, "best"), _value(folder, "last")) == (3, 2)
    assert _names(folder) == _referenced(folder) and len(_names(folder)) == 3


def test_a_save_removes_what_a_killed_save_left_and_nothing_else(tmp_path):
    folder = save_model(_filled(1), tmp_path / "m", **SMALL)
    leftovers = [".weights-abc123.tmp", ".config.x1y2.tmp.json", "weights-0123456789abcdef.safetensors"]
    mine = ["notes.txt", "weights-mine.safetensors", "weights-0123456789abcdef.safetensors.bak", "history.csv",
            "weights.safetensors"]  # the old scheme's name, but not named by config.json: not ours to delete
    for name in leftovers + mine:
        (folder / name).write_text("x")
    save_model(_filled(2), folder, **SMALL)
    assert _names(folder) == sorted(mine + _referenced(folder))
    assert _value(folder) == 2


def test_a_new_folder_cleans_a_killed_creation_of_the_same_folder(tmp_path):
    stale = tmp_path / ".m.deepseg-new-abc123"
    stale.mkdir()
    (stale / ".weights-x.tmp").write_text("partial")
    other = tmp_path / ".m.deepseg-new-user"
    other.mkdir()
    (other / "data.txt").write_text("not ours")
    save_model(_filled(1), tmp_path / "m", **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.deepseg-new-user", "m"]


def test_folders_with_the_old_weight_names_load_and_are_migrated(tmp_path):
    folder = save_model(_filled(1), tmp_path / "m", **SMALL)
    save_model(_filled(2), folder, which="last", **SMALL)
    config = json.loads((folder / "config.json").read_text())
    for which, legacy in (("best", "weights.safetensors"), ("last", "weights_last.safetensors")):
        (folder / config["weights"][which]["file"]).rename(folder / legacy)
        config["weights"][which]["file"] = legacy
    (folder / "config.json").write_text(json.dumps(config))
    assert (_value(folder, "best"), _value(folder, "last")) == (1, 2)
    save_model(_filled(3), folder, which="last", **SMALL)  # the old "best" file is still used: kept
    assert "weights.safetensors" in _names(folder) and "weights_last.safetensors" not in _names(folder)
    save_model(_filled(4), folder, which="best", **SMALL)
    assert _names(folder) == _referenced(folder) and not any(n.startswith("weights.") for n in _names(folder))
    assert (_value(folder, "best"), _value(folder, "last")) == (4, 3)


def test_weights_outside_the_folder_are_refused(tmp_path):
    folder = save_model(_filled(1), tmp_path / "m", **SMALL)
    config = json.loads((folder / "config.json").read_text())
    config["weights"]["best"]["file"] = "../elsewhere.safetensors"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="expected a file name inside the model folder"):
        load_model(folder)


# ---------------------------------------------------------------------------- real kills (SIGKILL)

ROOT = Path(__file__).resolve().parents[1]
# Saves versions start, start+1, ... into one folder (odd: "best", even: "last"), printing each one done.
# With a kill point N, the process SIGKILLs itself just before its N-th file-system step of the saves.
SAVER = """
import os, signal, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from engine.model_files import save_model
from engine.networks import build
from engine.normalization import Normalization

folder, start, kill_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
steps = [0]
def killing(function):
    def wrapped(*args, **kwargs):
        steps[0] += 1
        if steps[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return function(*args, **kwargs)
    return wrapped
if kill_at:
    os.replace, os.fsync, Path.unlink = killing(os.replace), killing(os.fsync), killing(Path.unlink)
net = build("unet2d", in_channels=1, classes=2, depth=2, filters=4)
print("ready", flush=True)
version = start
while True:
    with torch.no_grad():
        for tensor in net.state_dict().values():
            tensor.fill_(version)
    save_model(net, folder, which="best" if version % 2 else "last", patch=(16, 16), axes="YX",
               normalization=Normalization("none"))
    print(version, flush=True)
    version += 1
"""


def _saver(folder, start, kill_at=0):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", SAVER, str(folder), str(start), str(kill_at)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _check_after_kill(folder, before, done, start):
    """Each slot holds its previous value, its newest completed version or the version being saved."""
    running = max(done, default=start - 1) + 1  # the save the kill interrupted (or just completed)
    for which, parity in (("best", 1), ("last", 0)):
        finished = [v for v in done if v % 2 == parity]
        allowed = {finished[-1] if finished else before[which]} | ({running} if running % 2 == parity else set())
        assert _value(folder, which) in allowed, (which, done)
    extra = set(_names(folder)) - set(_referenced(folder))
    assert all(n.startswith(".weights-") or n.startswith(".config.") or n.startswith("weights-") for n in extra), extra
    assert len(extra) <= 2, extra  # at most what the one interrupted save had in hand
    return {w: _value(folder, w) for w in ("best", "last")}, running + 1


def _fresh_folder(tmp_path):
    folder = save_model(_filled(-1), tmp_path / "m", which="best", **SMALL)
    save_model(_filled(-2), folder, which="last", **SMALL)
    return folder, {"best": -1, "last": -2}


def test_sigkill_at_random_moments_leaves_a_loadable_folder(tmp_path):
    """Ten kills, each after 0-3 completed saves plus a random 0-50 ms: inside a save, or between two."""
    folder, state = _fresh_folder(tmp_path)
    rng = random.Random(10)
    start = 1
    for _ in range(10):
        process = _saver(folder, start)
        assert process.stdout.readline() == "ready\n", process.stderr.read()
        done = [int(process.stdout.readline()) for _ in range(rng.randrange(4))]
        time.sleep(rng.uniform(0.0, 0.05))
        process.send_signal(signal.SIGKILL)
        out, err = process.communicate()
        assert process.returncode == -signal.SIGKILL, err
        done += [int(line) for line in out.split()]
        state, start = _check_after_kill(folder, state, done, start)
    save_model(_filled(0), folder, which="last", **SMALL)
    assert _names(folder) == _referenced(folder)  # the next save cleans everything the kills left


@pytest.mark.parametrize("kill_at", range(1, 8))
def test_sigkill_at_each_step_of_an_update(tmp_path, kill_at):
    """The file-system steps of one update: 1 fsync the new weights, 2 rename them to their name,
    3 (config temp name), 4 fsync the new config, 5 replace config.json, 6 delete the old weights,
    7 fsync the folder. Killed before step 5 the folder holds the old version, from step 6 on the new."""
    folder, state = _fresh_folder(tmp_path)
    process = _saver(folder, 1, kill_at)
    out, err = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL, err
    done = [int(line) for line in out.split()[1:]]
    assert done == []  # killed inside the first save
    new, _ = _check_after_kill(folder, state, done, 1)
    assert new["best"] == (1 if kill_at > 5 else -1) and new["last"] == -2
    save_model(_filled(0), folder, which="last", **SMALL)
    assert _names(folder) == _referenced(folder)


def test_loading_while_another_process_saves_always_succeeds(tmp_path):
    """Readers take no lock: a load that finds its weights deleted by a newer save reads the folder again."""
    folder, _ = _fresh_folder(tmp_path)
    process = _saver(folder, 1)
    try:
        assert process.stdout.readline() == "ready\n", process.stderr.read()
        seen, loads = set(), 0
        while len(seen) < 5 and loads < 5000:  # until five versions were seen while saves replaced them
            seen.add(_value(folder, "best"))
            loads += 1
    finally:
        process.kill()
        out, _ = process.communicate()
    assert len(seen) == 5, (seen, loads, out)


def test_a_load_that_a_save_overtakes_reads_the_folder_again(tmp_path, monkeypatch):
    """Interleaving forced by patching: a real save lands between reading config.json and the weights."""
    folder = save_model(_filled(1), tmp_path / "m", **SMALL)
    read_bytes, overtaken = Path.read_bytes, []

    def save_first(path):
        if path.suffix == ".safetensors" and not overtaken:
            overtaken.append(path.name)
            save_model(_filled(2), folder, **SMALL)  # deletes the file the loader is about to read
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", save_first)
    assert _value(folder) == 2 and len(overtaken) == 1 and not (folder / overtaken[0]).exists()
