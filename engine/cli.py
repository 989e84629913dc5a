"""The ``deepseg`` command line: train, predict, evaluate, info, demo, activations; subcommands of installed
extensions (fiji_bridge: macro, doctor, fiji) come through the ``deepseg.commands`` entry points."""

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
    from .config import train_options

    p = sub.add_parser("train", help="train a network on images and label images",
                       description="Train a segmentation network. Options given here override --config.")
    for declared in train_options():  # declared once, on the TrainConfig fields
        if declared.flag:
            _add_declared(p, declared)
    p.add_argument("--config", help="JSON file with training options (see train_config.json of a model)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_declared(p: argparse.ArgumentParser, declared: Any) -> None:
    """The argument of one declared option (:class:`engine.options.Declared`); its value lands in ``name``."""
    shown = declared.default not in (None, "", {}, False) and not declared.auto_help
    text = declared.full_help("default") + (f" (default: {declared.default})" if shown else "")
    kwargs: dict[str, Any] = {"dest": declared.name, "help": text}
    if declared.kind == "bool":
        kwargs.update(action="store_true", default=None)
    elif declared.kind == "mapping":
        kwargs.update(action="append", type=_key_value, default=[], metavar="KEY=VALUE")
    elif declared.kind == "size":
        kwargs.update(type=_ints, metavar="SIZE")
    elif declared.kind == "choice" and not callable(declared.choices):
        kwargs.update(choices=declared.choice_list())
    else:
        kind = {"int": int, "float": float}.get(declared.kind, str)
        kwargs.update(type=kind, metavar=declared.flag.lstrip("-").upper().replace("-", "_"))
    p.add_argument(declared.flag, **kwargs)


def _train_config(args: argparse.Namespace) -> Any:
    """The TrainConfig of ``deepseg train``: --config, overridden by the flags given."""
    from .config import TrainConfig, train_options
    from .options import to_config

    base = TrainConfig.from_file(args.config).to_dict() if args.config else {}
    given = [(d, getattr(args, d.name)) for d in train_options() if d.flag]
    flags = {d.name: to_config(d, value) for d, value in given if value not in (None, [])}
    if "network_options" in flags:  # --option adds to the network options of --config
        flags["network_options"] = {**base.get("network_options", {}), **flags["network_options"]}
    return TrainConfig.from_dict({**base, **flags})


def _train(args: argparse.Namespace) -> int:
    from .progress import TqdmProgress
    from .training import train

    config = _train_config(args)
    bar = TqdmProgress(disable=args.quiet)
    try:
        result = train(config, progress=bar)
    finally:
        bar.close()
    from .ddp import is_main

    if not is_main():  # torchrun/SLURM: rank 0 reports
        return 0
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
    p.add_argument("--postprocess", metavar="STEPS", help="post-process the labels (default: the model's stored "
                   "steps, shown by `deepseg info`; none: no post-processing). " + cli_postprocess.STEPS_HELP)
    p.add_argument("--save-postprocess", action="store_true", help="store --postprocess in the model folder as its "
                   "default, applied by later predictions (--postprocess none removes it); saved once the "
                   "prediction succeeded")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                   help="network arithmetic: auto (bf16 where the CPU/GPU does it natively, else fp32), bf16, "
                   "fp16 (CUDA) or fp32 (default auto)")
    p.add_argument("--quiet", action="store_true")
    z = p.add_argument_group("chunked volumes (zarr / OME-Zarr input or output, or --cluster): blockwise, resumable")
    z.add_argument("--cluster", help="run blocks on Dask: local:N (N worker processes here) or a scheduler "
                   "address such as tcp://scheduler:8786")
    z.add_argument("--block", type=_ints, help="block size: planes, or one size per spatial axis (default: "
                   "4 tile depths of whole planes for 3D networks, 16 planes for 2D ones)")
    z.add_argument("--probabilities-dtype", choices=["float32", "float16", "uint8"], default="float32",
                   help="probabilities stored as float32, float16 or uint8 (round(p * 255))")
    z.add_argument("--label-name", default="deepseg",
                   help="name of the label image in an OME-Zarr container's labels/ (default deepseg)")
    z.add_argument("--overwrite", action="store_true",
                   help="replace an existing zarr output made by another model or options (default: refuse)")


def _predict_blockwise(args: argparse.Namespace) -> int:
    """`deepseg predict` into (or from) zarr / OME-Zarr, or on a Dask cluster: resumable, block by block."""
    from .blockwise import predict_zarr
    from .progress import TqdmProgress

    bar = TqdmProgress(disable=args.quiet)
    try:
        summary = predict_zarr(args.model, args.input, args.out, probabilities=args.probabilities,
                               probabilities_dtype=args.probabilities_dtype, label_name=args.label_name,
                               axes=args.axes, tile=args.tile, overlap=args.overlap, blend=args.blend,
                               batch=args.batch, block=args.block, device=args.device, tta=args.tta,
                               precision=args.precision, cluster=args.cluster, overwrite=args.overwrite, progress=bar)
    finally:
        bar.close()
    counts = ", ".join(f"{k}: {v}" for k, v in (summary.get("class_voxels") or {}).items())
    print(f"{args.input} -> {summary['labels']}: {summary['computed']} of {summary['blocks']} blocks computed, "
          f"{summary['already_finished']} already finished" + (f" ({counts})" if counts else ""))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .fileutil import refuse_overwriting
    from .io import list_images
    from .model_files import load_model
    from .prediction import predict_file
    from .progress import TqdmProgress

    from .readers import handles, split_dataset_path

    source = Path(args.input)
    if not split_dataset_path(source)[0].exists():  # file.h5:/dataset names a file
        raise FileNotFoundError(f"input {str(source)!r} does not exist")
    from .blockwise import blockwise_needed

    if args.save_postprocess and args.postprocess is None:
        raise DeepSegError("--save-postprocess stores the steps of --postprocess: give --postprocess STEPS (or none)")
    if blockwise_needed(source, args.out, args.cluster):
        if args.postprocess not in (None, "none") or args.save_postprocess:
            raise DeepSegError("--postprocess applies to TIFF outputs; for zarr run `deepseg postprocess LABELS.zarr "
                               "--out CLEAN.zarr --steps STEPS` on the result")
        from .model_files import stored_postprocess

        stored = stored_postprocess(args.model) if args.postprocess is None else None
        if stored:
            import warnings

            warnings.warn(f"the model's default post-processing ({stored}) is not applied to zarr outputs: run "
                          "`deepseg postprocess` on the result")
        return _predict_blockwise(args)
    if args.block or args.probabilities_dtype != "float32":
        raise DeepSegError("--block and --probabilities-dtype apply to zarr / OME-Zarr outputs (*.zarr, *.ome.zarr)")
    jobs: list[tuple[Path, Path, Path | None]]
    from .chunked_io import is_zarr_path

    if source.is_dir() and not handles(source) and not is_zarr_path(source):  # a folder of images (a DICOM
        # series folder or a zarr store is one volume)
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
    if args.postprocess is not None:  # checked (syntax, class names) before anything runs
        from .postprocess import check_steps

        check_steps(args.postprocess, model.class_names)
    bar = TqdmProgress(disable=args.quiet)
    try:
        for image, labels, probs in jobs:
            summary = predict_file(model, image, labels, probabilities_path=probs, axes=args.axes,
                                   tile=args.tile, overlap=args.overlap, blend=args.blend,
                                   batch=args.batch, tta=args.tta, precision=args.precision,
                                   postprocess=args.postprocess, progress=bar)
            counts = ", ".join(f"{k}: {v}" for k, v in summary.get("class_voxels", {}).items())
            print(f"{image} -> {labels}" + (f" ({counts})" if counts else ""))
    finally:
        bar.close()
    if args.save_postprocess:
        from .model_files import save_postprocess

        stored = save_postprocess(args.model, args.postprocess)
        print(f"default post-processing of {args.model}: {stored or 'none'}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="compare label images (or folders of them) with ground truth",
                       description="Compare a predicted label image with the truth, or every file of a folder "
                       "with its namesake (extension ignored) in a truth folder: one row per image, then 'all'.")
    p.add_argument("--prediction", required=True, help="predicted label image, or a folder of them")
    p.add_argument("--truth", required=True, help="ground-truth label image, or a folder of them")
    p.add_argument("--mask", help="evaluate only where this mask is non-zero (single images)")
    p.add_argument("--classes", type=int)
    p.add_argument("--class-names", help="comma-separated class names")
    p.add_argument("--ignore-label", type=int, help="truth value to leave out")
    p.add_argument("--json", help="write the report as JSON (folders: every image's and the total)")
    p.add_argument("--csv", help="write per-class metrics as CSV (folders: one row per image, then 'all')")
    p.add_argument("--plot", help="write the confusion matrix as PNG (folders: of all images together)")
    p.add_argument("--surface-metrics", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure the BF score, HD95 and ASSD per class (default: on; they hold the label "
                   "images in memory, turn them off for volumes that do not fit)")
    p.add_argument("--tolerance", default=None, metavar="DISTANCE",
                   help="BF score tolerance: a distance in the images' unit (2.5), in voxels (3px) or in percent "
                   "of the image diagonal (default 0.75%%, as DeepMIB)")
    p.add_argument("--spacing", default=None, metavar="Z,Y,X",
                   help="voxel size per axis, comma-separated (or one number), overriding the files' calibration")


def _evaluate(args: argparse.Namespace) -> int:
    from .errors import InputError
    from .fileutil import refuse_overwriting
    from .io import read_labels
    from .metrics import evaluate, evaluate_folders

    refuse_overwriting({"--json": args.json, "--csv": args.csv, "--plot": args.plot},
                       {"the prediction": args.prediction, "the truth": args.truth, "the mask": args.mask})
    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    options = dict(classes=args.classes, ignore_label=args.ignore_label, class_names=names,
                   surface=args.surface_metrics, tolerance=args.tolerance, spacing=args.spacing)
    folders = [Path(p).is_dir() for p in (args.prediction, args.truth)]
    if any(folders):
        if not all(folders):
            raise InputError("--prediction and --truth must both be folders, or both label image files")
        if args.mask:
            raise InputError(f"--mask {args.mask!r} applies to single images, not to folders")
        report = evaluate_folders(args.prediction, args.truth, **options)
        total = report.total
    else:
        mask = read_labels(args.mask) if args.mask else None
        report = total = evaluate(args.prediction, args.truth, mask=mask, **options)
    print(report.summary())
    if args.json:
        report.to_json(args.json)
    if args.csv:
        report.to_csv(args.csv)
    if args.plot:
        total.plot_confusion(args.plot)
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
        f"postprocess   {info.get('postprocess') or 'none'}",
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
    """Run subcommand ``name`` contributed through the ``deepseg.commands`` entry points (e.g. fiji_bridge's)."""
    from .plugins import COMMANDS as GROUP, load

    return int(load(GROUP, name).main(argv))


def _plugin_help(name: str) -> str:
    from .plugins import COMMANDS as GROUP, load

    try:
        return str(load(GROUP, name).help)
    except DeepSegError as err:
        return f"(unavailable: {err})"


from . import cli_objects  # noqa: E402  (light: its heavy imports are inside its functions)
from . import cli_postprocess  # noqa: E402  (light, as above)
from . import cli_plan  # noqa: E402  (light, as above)
from . import cli_augment  # noqa: E402  (light, as above)
from . import cli_export  # noqa: E402  (light, as above)

COMMANDS = {
    "train": (_add_train, _train),
    "predict": (_add_predict, _predict),
    "evaluate": (_add_evaluate, _evaluate),
    "info": (_add_info, _info),
    "networks": (_add_networks, _networks),
    "activations": (_add_activations, _activations),
    "demo": (_add_demo, _demo),
    "plan": (cli_plan.add_plan, cli_plan.run_plan),
    "measure": (cli_objects.add_measure, cli_objects.run_measure),
    "mesh": (cli_objects.add_mesh, cli_objects.run_mesh),
    "postprocess": (cli_postprocess.add_postprocess, cli_postprocess.run_postprocess),
    "augment-preview": (cli_augment.add_augment_preview, cli_augment.run_augment_preview),
    "export": (cli_export.add_export, cli_export.run_export),
}


def build_parser(*, extensions: bool = True) -> argparse.ArgumentParser:
    """The ``deepseg`` parser; ``extensions``: also list the entry-point subcommands (loads them for their help)."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="deepseg", description="Deep-learning segmentation of microscopy and CT images.")
    parser.add_argument("--version", action="version", version=f"deepseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add, _ in COMMANDS.values():
        add(sub)
    from .plugins import COMMANDS as GROUP, available

    # e.g. macro, doctor and fiji from fiji_bridge; they parse their own options
    for name in sorted(available(GROUP)) if extensions else []:
        if name not in COMMANDS:
            sub.add_parser(name, help=_plugin_help(name), add_help=False)
    return parser


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Warnings as one line, like errors: ``deepseg: warning: <message>``."""
    print(f"deepseg: warning: {message}", file=file or sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``deepseg`` command; returns the exit status."""
    import warnings

    argv = list(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _run(argv)


def _run(argv: list[str]) -> int:
    try:
        if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
            from .plugins import COMMANDS as GROUP, available

            if argv[0] in available(GROUP):
                return _bridge(argv[0], argv[1:])
        parser = build_parser(extensions=not argv or argv[0] not in COMMANDS)
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
