"""``deepseg postprocess``: clean a label image (remove small objects, fill holes, keep the largest object,
opening/closing), chunk by chunk for volumes larger than memory. The steps are :mod:`engine.postprocess`'s."""

from __future__ import annotations

import argparse

STEPS_HELP = ('post-processing steps, e.g. "bone: min-size=500um3, fill-holes=3d, largest; all: closing=1". '
              "Groups 'CLASSES: steps' are separated by ';' (CLASSES: a name, a number, several joined by '+', or "
              "all); steps: min-size=N (voxels) or a physical size such as 500um3 (3D) / 20um2 (2D); "
              "fill-holes[=3d|2d]; largest; opening=R / closing=R (R in voxels, or physical such as 1.5um: "
              "anisotropy-aware). Voxel sizes come from the file (or --spacing).")


def add_postprocess(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("postprocess", help="clean a label image: small objects, holes, largest object, "
                       "opening/closing (chunked for volumes larger than memory)",
                       description="Post-process a label image (TIFF or zarr / OME-Zarr) into a new one. To make "
                       "steps the default of a model, give them to `deepseg predict MODEL IMAGE --out X "
                       "--postprocess STEPS --save-postprocess`.")
    p.add_argument("labels", help="label image: TIFF (memory-mapped) or zarr / OME-Zarr")
    p.add_argument("--out", required=True, help="output label image: .tif, .zarr or .ome.zarr (written atomically)")
    p.add_argument("--steps", required=True, help=STEPS_HELP)
    p.add_argument("--spacing", help="voxel size overriding the file's: one value or one per axis (Z first), "
                   "optionally with a unit, e.g. 2,0.5,0.5um")
    p.add_argument("--class-names", help="comma-separated class names (background first), to name classes in --steps")
    p.add_argument("--model", help="model folder whose class names --steps may use")
    p.add_argument("--axes", help="axes of the labels when the file does not say, e.g. ZYX")
    p.add_argument("--chunk", type=_sizes, help="process in chunks of this size (one value or one per axis; default: "
                   "in memory up to 2**26 voxels, else 64x1024x1024)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _sizes(text: str) -> list[int]:
    from .cli import _ints

    return _ints(text)


def run_postprocess(args: argparse.Namespace) -> int:
    from .errors import InputError
    from .postprocess import postprocess_file
    from .progress import TqdmProgress

    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    if args.model:
        if names:
            raise InputError("give --class-names or --model (whose class names are used), not both")
        from .model_files import load_model

        names = load_model(args.model, device="cpu").class_names
    chunks = args.chunk
    if chunks is not None and len(chunks) == 1:
        chunks = chunks * _spatial_rank(args.labels, args.axes)
    bar = TqdmProgress(disable=args.quiet)
    try:
        summary = postprocess_file(args.labels, args.out, args.steps, axes=args.axes, spacing=args.spacing,
                                   class_names=names, chunks=chunks, progress=bar)
    finally:
        bar.close()
    counts = ", ".join(f"{k}: {v}" for k, v in (summary.get("class_voxels") or {}).items())
    print(f"{args.labels} -> {summary['labels']} [{summary['steps']}]" + (f" ({counts})" if counts else ""))
    return 0


def _spatial_rank(path: str, axes: str | None) -> int:
    from .chunked_io import open_volume

    return len(open_volume(path, axes).dims)
