"""The ``deepseg`` command line: train, predict, evaluate, info, demo, activations, macro, doctor."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import Cancelled, DeepSegError


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: expected e.g. 128 or 32,128,128") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be positive integers")
    return values


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. depth=4")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a network on images and label images",
                       description="Train a segmentation network. Options given here override --config.")
    p.add_argument("--images", help="image file, folder of images, or a DeepMIB training folder (Images/, Labels/, Masks/)")
    p.add_argument("--labels", help="label image file or folder (paired with images by sorted name)")
    p.add_argument("--masks", help="mask file or folder: 0 = not annotated")
    p.add_argument("--axes", help="axes of the images when the files do not say, e.g. ZYX or YXC")
    p.add_argument("--network", help="network name (see `deepseg networks`); default unet2d")
    p.add_argument("--option", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="network option, e.g. --option depth=4 --option filters=16 (repeatable)")
    p.add_argument("--patch", type=_ints, help="patch size: one int or one per axis, e.g. 128 or 32,128,128")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch", type=int, help="minibatch size")
    p.add_argument("--steps", type=int, dest="steps_per_epoch", help="steps per epoch (default: about one pass)")
    p.add_argument("--classes", type=int, help="number of classes incl. background (default: max label + 1)")
    p.add_argument("--class-names", help="comma-separated class names, background first")
    p.add_argument("--ignore-label", type=int, help="label value meaning 'not annotated'")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd", "rmsprop"])
    p.add_argument("--schedule", choices=["poly", "piecewise", "cosine", "constant"])
    p.add_argument("--loss", choices=["ce", "focal", "dice", "generalized_dice", "ce_dice"])
    p.add_argument("--normalization", choices=["zscore", "zscore_image", "percentile", "minmax", "none"])
    p.add_argument("--validation", type=float, dest="validation_fraction", help="validation fraction (0 = none)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N, mps")
    p.add_argument("--init-from", help="model folder to start from (transfer learning)")
    p.add_argument("--freeze-encoder", action="store_true", default=None)
    p.add_argument("--out", help="model folder to write (default: model)")
    p.add_argument("--resume", help="checkpoint file or model folder to continue from")
    p.add_argument("--config", help="JSON file with training options (see train_config.json of a model)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _train(args: argparse.Namespace) -> int:
    from .config import TrainConfig
    from .progress import TqdmProgress
    from .training import train

    base = TrainConfig.from_file(args.config).to_dict() if args.config else {}
    flags = {k: v for k, v in vars(args).items()
             if k in TrainConfig.field_names() and v is not None}
    if args.patch is not None:
        flags["patch"] = args.patch[0] if len(args.patch) == 1 else args.patch
    if args.class_names:
        flags["class_names"] = [n.strip() for n in args.class_names.split(",")]
    if args.option:
        flags["network_options"] = {**base.get("network_options", {}), **dict(args.option)}
    config = TrainConfig.from_dict({**base, **flags})
    bar = TqdmProgress(disable=args.quiet)
    try:
        result = train(config, progress=bar)
    finally:
        bar.close()
    final = result.final_metrics
    shown = ", ".join(f"{k} {v:.4f}" for k, v in final.items() if isinstance(v, float) and k != "lr")
    print(f"model written to {result.model_dir} ({len(result.history)} epochs; {shown})")
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment an image, a stack or a folder with a trained model")
    p.add_argument("model", help="model folder")
    p.add_argument("input", help="image file or folder of images")
    p.add_argument("--out", required=True, help="label image file (or folder when INPUT is a folder)")
    p.add_argument("--probabilities", help="also write class probabilities (file, or folder for folder input)")
    p.add_argument("--axes", help="axes of the input when the file does not say, e.g. ZYX")
    p.add_argument("--tile", type=_ints, help="tile size (default: training patch, >= 256 in 2D)")
    p.add_argument("--overlap", type=float, default=0.25, help="tile overlap fraction (default 0.25)")
    p.add_argument("--blend", choices=["gaussian", "mean"], default="gaussian")
    p.add_argument("--batch", type=int, help="tiles per forward pass")
    p.add_argument("--tta", action="store_true", help="mirroring test-time augmentation (slower, smoother)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")


def _predict(args: argparse.Namespace) -> int:
    from .fileutil import refuse_overwriting
    from .io import list_images
    from .model_files import load_model
    from .prediction import predict_file
    from .progress import TqdmProgress

    source = Path(args.input)
    if not source.exists():
        raise FileNotFoundError(f"input {str(source)!r} does not exist")
    jobs: list[tuple[Path, Path, Path | None]]
    if source.is_dir():
        out_dir = Path(args.out)
        prob_dir = Path(args.probabilities) if args.probabilities else None
        jobs = [(f, out_dir / (f.stem + ".tif"), prob_dir / (f.stem + ".tif") if prob_dir else None)
                for f in list_images(source)]
        if not jobs:
            raise DeepSegError(f"folder {str(source)!r} holds no images")
    else:
        jobs = [(source, Path(args.out), Path(args.probabilities) if args.probabilities else None)]
    for image, labels, probs in jobs:  # all checked before anything is written
        refuse_overwriting({"--out": labels, "--probabilities": probs}, {"the input image": image})
    model = load_model(args.model, device=args.device)
    bar = TqdmProgress(disable=args.quiet)
    try:
        for image, labels, probs in jobs:
            summary = predict_file(model, image, labels, probabilities_path=probs, axes=args.axes,
                                   tile=args.tile, overlap=args.overlap, blend=args.blend,
                                   batch_size=args.batch, tta=args.tta, progress=bar)
            counts = ", ".join(f"{k}: {v}" for k, v in summary.get("class_voxels", {}).items())
            print(f"{image} -> {labels}" + (f" ({counts})" if counts else ""))
    finally:
        bar.close()
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="compare a label image with ground truth")
    p.add_argument("--prediction", required=True, help="predicted label image")
    p.add_argument("--truth", required=True, help="ground-truth label image")
    p.add_argument("--mask", help="evaluate only where this mask is non-zero")
    p.add_argument("--classes", type=int)
    p.add_argument("--class-names", help="comma-separated class names")
    p.add_argument("--ignore-label", type=int, help="truth value to leave out")
    p.add_argument("--json", help="write the report as JSON")
    p.add_argument("--csv", help="write per-class metrics as CSV")
    p.add_argument("--plot", help="write the confusion matrix as PNG")


def _evaluate(args: argparse.Namespace) -> int:
    from .fileutil import refuse_overwriting
    from .io import read_labels
    from .metrics import evaluate

    refuse_overwriting({"--json": args.json, "--csv": args.csv, "--plot": args.plot},
                       {"the prediction": args.prediction, "the truth": args.truth, "the mask": args.mask})
    mask = read_labels(args.mask) if args.mask else None
    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    report = evaluate(args.prediction, args.truth, classes=args.classes, ignore_label=args.ignore_label,
                      mask=mask, class_names=names)
    print(report.summary())
    if args.json:
        report.to_json(args.json)
    if args.csv:
        report.to_csv(args.csv)
    if args.plot:
        report.plot_confusion(args.plot)
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show a model folder's network, classes and training record")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="print JSON")


def _info(args: argparse.Namespace) -> int:
    from .model_files import load_model

    info = load_model(args.model, device="cpu").describe()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    training = info.get("training") or {}
    lines = [
        f"model         {info['path']}",
        f"network       {info.get('network')}  {json.dumps(info.get('options', {}))}",
        f"parameters    {info.get('parameters'):,}",
        f"receptive     {info.get('receptive_field')}",
        f"input         {info.get('in_channels')} channel(s), axes {info.get('axes')}, patch {info.get('patch')}",
        f"classes       {info.get('classes')}: {', '.join(info.get('class_names', []))}",
        f"normalization {info['normalization'].get('method')}",
        f"trained       {training.get('epochs', '?')} epochs on {len(training.get('data', []))} image(s); "
        f"final {json.dumps(training.get('final', {}))}",
        f"versions      {json.dumps(info.get('versions', {}))}",
    ]
    print("\n".join(lines))
    return 0


def _add_networks(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("networks", help="list the available networks and their options")


def _networks(args: argparse.Namespace) -> int:
    from .networks import get_spec, list_networks

    for name in list_networks():
        spec = get_spec(name)
        options = ", ".join(f"{k}={v!r}" for k, v in spec.defaults().items())
        print(f"{name:20s} {spec.spatial_dims}D  {spec.description}\n{'':25s}{options}")
    return 0


def _add_activations(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("activations", help="show what a layer of a trained network responds to")
    p.add_argument("model")
    p.add_argument("image", nargs="?", help="image to take the input patch from")
    p.add_argument("--layer", help="layer name (omit to list the layers)")
    p.add_argument("--out", help="output TIFF stack (one slice per filter); a PNG montage is written beside it")
    p.add_argument("--axes")


def _activations(args: argparse.Namespace) -> int:
    from . import activations as act
    from .errors import InputError
    from .fileutil import refuse_overwriting
    from .io import read_image
    from .model_files import load_model

    model = load_model(args.model, device="cpu")
    if not args.layer or args.layer == "list":
        print("\n".join(act.list_layers(model.network)))
        return 0
    if not args.image:
        raise InputError(f"--layer {args.layer}: give the IMAGE to take the input patch from")
    out = Path(args.out or f"activations-{args.layer}.tif")
    png = out.with_suffix(".png")
    if png == out:  # --out x.png: the stack goes to x.tif
        out = out.with_suffix(".tif")
    refuse_overwriting({"--out": out, "the montage": png}, {"the image": args.image})
    features = act.image_activations(model, read_image(args.image, axes=args.axes), args.layer)
    act.save_activations(features, tif_path=out, png_path=png)
    print(f"{features.shape[0]} feature maps of layer {args.layer!r} -> {out} and {png}")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train, predict and evaluate on built-in synthetic data")
    p.add_argument("--out", default="deepseg-demo", help="folder for all outputs (default deepseg-demo)")
    p.add_argument("--3d", dest="three_d", action="store_true", help="3D stacks with a 3D U-Net instead of 2D")
    p.add_argument("--epochs", type=int, help="override the number of epochs")
    p.add_argument("--imagej", action="store_true",
                   help="run training and prediction through ImageJ commands (embedded ImageJ 1.x)")
    p.add_argument("--quiet", action="store_true")


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    summary = run_demo(args.out, three_d=args.three_d, epochs=args.epochs, imagej=args.imagej, quiet=args.quiet)
    print(summary)
    return 0


def _bridge(name: str, argv: list[str]) -> int:
    try:
        from fiji_bridge import cli as bridge_cli
    except ImportError as err:
        raise DeepSegError(f"`deepseg {name}` needs the fiji_bridge package: {err}") from None
    return int(getattr(bridge_cli, f"{name}_main")(argv))


COMMANDS = {
    "train": (_add_train, _train),
    "predict": (_add_predict, _predict),
    "evaluate": (_add_evaluate, _evaluate),
    "info": (_add_info, _info),
    "networks": (_add_networks, _networks),
    "activations": (_add_activations, _activations),
    "demo": (_add_demo, _demo),
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="deepseg", description="Deep-learning segmentation of microscopy and CT images.")
    parser.add_argument("--version", action="version", version=f"deepseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add, _ in COMMANDS.values():
        add(sub)
    sub.add_parser("macro", help="run an ImageJ macro (.ijm) with deepseg commands, headless", add_help=False)
    sub.add_parser("doctor", help="check Java, ImageJ/Fiji, display, torch device and memory", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``deepseg`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in ("macro", "doctor"):
            return _bridge(argv[0], argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return COMMANDS[args.command][1](args)
    except (Cancelled, KeyboardInterrupt):
        print("deepseg: cancelled", file=sys.stderr)
        return 130
    except (DeepSegError, FileNotFoundError) as err:
        print(f"deepseg: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
