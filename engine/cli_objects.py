"""``deepseg measure`` (objects of a class and their measurements) and ``deepseg mesh`` (surface meshes)."""

from __future__ import annotations

import argparse
from typing import Any


def _spacing(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a voxel size: expected e.g. 2.0,0.5,0.5 (z,y,x)") from None
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: voxel sizes must be positive numbers (z,y,x or y,x)")
    return values


def _class_options(p: argparse.ArgumentParser, many: bool) -> None:
    what = "class names or numbers, comma-separated" if many else "class name or number"
    p.add_argument("labels", help="label image (class per voxel), e.g. the output of deepseg predict")
    p.add_argument("--class", dest="cls", required=True, help=f"{what} (names from --class-names or --model)")
    p.add_argument("--class-names", help="comma-separated class names, background first")
    p.add_argument("--model", help="model folder whose class names --class may use")
    p.add_argument("--spacing", type=_spacing, help="voxel size z,y,x (2D: y,x) (default: from the file)")
    p.add_argument("--axes", help="axes of the label file when the file does not say, e.g. ZYX")
    p.add_argument("--connectivity", type=int, help="objects touch through faces (1), edges (2) or also corners "
                   "(3, the default in 3D)")


def _class_names(args: argparse.Namespace) -> list[str] | None:
    if args.class_names:
        return [n.strip() for n in args.class_names.split(",")]
    if args.model:
        from .model_files import load_model

        return load_model(args.model, device="cpu").class_names
    return None


def add_measure(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("measure", help="number the objects of a class and measure them (CSV table)",
                       description="Connected objects of one class: voxels, physical volume (2D: area), surface area "
                       "(2D: perimeter), centroid and bounding box of each, as a CSV table; optionally the "
                       "instance label image.")
    _class_options(p, many=False)
    p.add_argument("--csv", required=True, help="CSV table to write, one row per object")
    p.add_argument("--instances", help="also write the instance label image (one number per object)")


def run_measure(args: argparse.Namespace) -> int:
    from .measure import measure_file

    summary = measure_file(args.labels, args.cls, csv_path=args.csv, instances_path=args.instances,
                           class_names=_class_names(args), spacing=args.spacing, connectivity=args.connectivity,
                           axes=args.axes)
    rows = summary["rows"]
    size = "volume" if rows and "volume" in rows[0] else "area"
    total = sum(r[size] for r in rows)
    unit = summary["unit"] or "pixel"
    also = f" and {args.instances}" if args.instances else ""
    print(f"{summary['objects']} objects of class {summary['class']} in {args.labels} (total {size} {total:.6g} "
          f"{unit}^{3 if size == 'volume' else 2}) -> {args.csv}{also}")
    return 0


def add_mesh(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mesh", help="surface mesh of a class (or of each object) as STL, PLY or OBJ",
                       description="Marching-cubes surface of a class of a 3D label image, with the voxel size "
                       "(watertight: the volume border is padded with background). Large volumes are meshed in "
                       "slabs of planes and merged.")
    _class_options(p, many=True)
    p.add_argument("--out", required=True, help="mesh file: .stl, .ply or .obj (several meshes: <stem>-<class>"
                   "[-<object>]<suffix>)")
    p.add_argument("--smooth", type=int, default=0, metavar="N", help="N smoothing iterations (default 0)")
    p.add_argument("--smooth-method", choices=["taubin", "laplacian"], default="taubin",
                   help="Taubin (keeps volume and shape, the default) or Laplacian with volume constraint")
    p.add_argument("--faces", type=int, metavar="N", help="decimate to at most N faces (quadric decimation)")
    p.add_argument("--per-object", action="store_true", help="one mesh per connected object (numbered files)")
    p.add_argument("--slab", type=int, metavar="PLANES", help="planes per slab (default: as many as fit in memory)")


def run_mesh(args: argparse.Namespace) -> int:
    from .mesh import mesh_file

    classes = [c.strip() for c in args.cls.split(",") if c.strip()]
    written = mesh_file(args.labels, classes, args.out, class_names=_class_names(args), spacing=args.spacing,
                        per_object=args.per_object, smooth=args.smooth, smooth_method=args.smooth_method,
                        faces=args.faces, slab=args.slab, connectivity=args.connectivity, axes=args.axes)
    for info in written:
        print(_mesh_line(info))
    if not written:
        print(f"no voxels of class {args.cls} in {args.labels}: nothing written")
    return 0


def _mesh_line(info: dict[str, Any]) -> str:
    closed = "watertight" if info["watertight"] else "NOT watertight"
    return (f"{info['path']}: {info['faces']} faces, {closed}, enclosed volume {info['volume']:.6g} "
            f"(voxels: {info['voxel_volume']:.6g}), area {info['area']:.6g}")
