"""Training options declared once: TrainConfig validation, the generated CLI, and unknown keywords."""

from __future__ import annotations

import json

import pytest

from engine.cli import _train_config, build_parser, main
from engine.config import TrainConfig, check_class_names, train_options
from engine.errors import InputError
from engine.options import checked_keywords

# Users' scripts call these flags: they stay exactly as they are (new ones may be added).
TRAIN_FLAGS = ("--images --labels --masks --axes --network --option --patch --epochs --batch --steps --classes "
               "--class-names --ignore-label --lr --optimizer --schedule --loss --normalization --validation --seed "
               "--device --init-from --freeze-encoder --out --resume --config --quiet").split()


def _train_args(argv: list[str]):
    return build_parser().parse_args(["train", *argv])


def test_every_train_flag_is_kept_and_generated_from_the_declarations():
    sub = build_parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    flags = [flag for action in sub._actions for flag in action.option_strings]
    assert set(TRAIN_FLAGS) <= set(flags)
    declared = {d.flag: d.name for d in train_options() if d.flag}
    assert set(flags) - set(declared) == {"-h", "--help", "--config", "--quiet"}  # the rest come from the table
    for action in sub._actions:
        if action.option_strings and action.option_strings[0] in declared:
            assert action.dest == declared[action.option_strings[0]]


def test_flags_map_onto_the_config():
    args = _train_args(["--images", "im", "--labels", "lab", "--masks", "m", "--axes", "ZYX", "--network", "unet3d",
                        "--option", "depth=2", "--option", "norm=instance", "--patch", "16,64,64", "--epochs", "3",
                        "--batch", "2", "--steps", "5", "--classes", "3", "--class-names", "bg, a,b",
                        "--ignore-label", "0", "--lr", "0.01", "--optimizer", "sgd", "--schedule", "cosine",
                        "--loss", "dice", "--normalization", "minmax", "--validation", "0.1", "--seed", "7",
                        "--device", "cpu", "--init-from", "base", "--freeze-encoder", "--out", "o", "--resume", "r"])
    assert _train_config(args) == TrainConfig(
        images="im", labels="lab", masks="m", axes="ZYX", network="unet3d",
        network_options={"depth": 2, "norm": "instance"}, patch=[16, 64, 64], epochs=3, batch=2, steps_per_epoch=5,
        classes=3, class_names=["bg", "a", "b"], ignore_label=0, lr=0.01, optimizer="sgd", schedule="cosine",
        loss="dice", normalization="minmax", validation_fraction=0.1, seed=7, device="cpu", init_from="base",
        freeze_encoder=True, out="o", resume="r")
    assert _train_config(_train_args(["--patch", "32"])).patch == 32
    assert _train_config(_train_args([])) == TrainConfig()  # no flag given: every default


def test_flags_override_the_config_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"network_options": {"depth": 2, "filters": 4}, "batch": 2, "epochs": 9}))
    config = _train_config(_train_args(["--config", str(path), "--option", "filters=8", "--epochs", "3"]))
    assert config.network_options == {"depth": 2, "filters": 8} and config.batch == 2 and config.epochs == 3


@pytest.mark.parametrize("changes, message", [
    ({"epochs": 0}, r"^epochs=0: expected >= 1$"),
    ({"classes": 1}, r"^classes=1: expected >= 2 \(background counts as a class\)$"),
    ({"lr": 0.0}, r"^lr=0.0: expected > 0$"),
    ({"batch": 1.5}, r"^batch=1.5: expected an integer >= 1 or None \(4 in 2D, 2 in 3D\)$"),
    ({"validation_fraction": 1}, r"^validation_fraction=1: expected 0 <= validation_fraction < 1$"),
    ({"optimizer": "adm"}, r"^optimizer='adm': expected one of \('adam', 'adamw', 'sgd', 'rmsprop'\)$"),
    ({"device": "gpu"}, r"device='gpu': expected 'auto', 'cpu'"),
])
def test_bad_values_name_the_value_and_what_is_expected(changes, message):
    with pytest.raises(InputError, match=message):
        TrainConfig(**changes)


def test_unknown_training_options_suggest_the_close_name():
    valid = ", ".join(TrainConfig.field_names())
    with pytest.raises(InputError) as err:
        TrainConfig(epoch=3)
    assert str(err.value) == f"TrainConfig(): unknown training option 'epoch' (did you mean 'epochs'?); valid options: {valid}"
    with pytest.raises(InputError, match="unknown training option 'tiles'; valid options: images"):
        TrainConfig().replace(tiles=3)
    with pytest.raises(InputError, match=r"^unknown training options 'epoch' \(did you mean 'epochs'\?\), "
                                         r"'lrr' \(did you mean 'lr'\?\); valid options: images, labels"):
        TrainConfig.from_dict({"epoch": 3, "lrr": 1, "seed": 1})


def test_checked_keywords_on_public_functions():
    @checked_keywords
    def predict(model, image, *, tile=None, overlap=0.25, batch=None):
        return model, image, tile, overlap, batch

    assert predict(1, 2, tile=(8, 8), batch=3) == (1, 2, (8, 8), 0.25, 3)
    assert predict(model=1, image=2) == (1, 2, None, 0.25, None)
    assert predict.__name__ == "predict" and predict.__wrapped__  # type: ignore[attr-defined]
    with pytest.raises(InputError) as err:
        predict(1, 2, tiles=3)
    assert str(err.value) == ("test_checked_keywords_on_public_functions.<locals>.predict(): unknown option 'tiles' "
                              "(did you mean 'tile'?); valid options: model, image, tile, overlap, batch")
    with pytest.raises(InputError, match=r"unknown option 'batch_size' \(did you mean 'batch'\?\)"):
        predict(1, 2, batch_size=3)
    with pytest.raises(InputError, match=r"unknown options 'x', 'y'; "):
        predict(1, 2, x=1, y=2)

    @checked_keywords(also=TrainConfig.field_names)
    def train(config=None, *, images=None, **overrides):
        return overrides

    assert train(epochs=2) == {"epochs": 2}
    with pytest.raises(InputError, match=r"unknown option 'epoch' \(did you mean 'epochs'\?\); valid options: "
                                         r"config, images, labels, masks, axes"):
        train(epoch=2)
    with pytest.raises(TypeError, match="takes \\*\\*kwargs"):
        checked_keywords(lambda **kwargs: kwargs)


def test_class_names_mismatch_says_both_counts_and_what_to_do():
    with pytest.raises(InputError) as err:
        TrainConfig(classes=3, class_names=["bg", "cell"])
    assert str(err.value) == ("2 class names given (bg, cell) but there are 3 classes (classes=3): give 3 names, "
                              "comma-separated, background first, or leave out classes to count them from the labels")
    with pytest.raises(InputError, match=r"1 class names given \(bg\) but there are 2 classes \(largest label 1 \+ 1\)"):
        check_class_names(["bg"], 2, counted=True)
    check_class_names(["bg", "cell"], 2)


def test_cli_class_names_mismatch_is_one_line_before_any_work(tmp_path, capsys):
    assert main(["train", "--images", str(tmp_path), "--classes", "3", "--class-names", "bg,cell",
                 "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("deepseg: error: 2 class names given (bg, cell) but there are 3 classes") and err.count("\n") == 1
    assert not (tmp_path / "m").exists()
