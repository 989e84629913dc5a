"""Surface meshes of label images: marching cubes with the voxel size, smoothing, decimation, STL/PLY/OBJ.

:func:`mask_surface` meshes the voxels a selector picks from a 3D volume (possibly memory-mapped) slab by
slab: each slab of planes overlaps the next by one plane, so every cell of the marching-cubes grid is
meshed exactly once and the vertices on the shared planes coincide (for binary masks at level 0.5 they
lie on edge midpoints, exactly representable) and are merged: the result equals the whole-volume mesh.
Only the voxels need not fit in memory; the mesh must. Lorensen's marching cubes on a volume padded by one
background voxel at its border gives closed (watertight), manifold surfaces. Coordinates are physical
(spacing honoured) in x, y, z order with outward normals. :func:`mesh_labels` meshes classes or objects,
:func:`mesh_file` writes them. Needs the ``post`` extra (scikit-image, trimesh, fast-simplification).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import xarray as xr

from .errors import InputError
from .measure import (available_memory, check_memory, class_label, class_value, instances, need_post,
                      spacing_tuple, spatial_values, with_spacing)

FORMATS = (".stl", ".ply", ".obj")
SMOOTHING = ("taubin", "laplacian")
BYTES_PER_VOXEL = 24  # a slab's mask, its padded float32 copy and marching cubes' work arrays, generously


@dataclass
class Surface:
    """One mesh and what it is of: ``tag`` (class name, ``class-object``), voxel count and voxel volume."""

    tag: str
    mesh: Any  # trimesh.Trimesh
    voxels: int
    voxel_volume: float

    def summary(self) -> dict[str, Any]:
        """Numbers to print or log: faces, vertices, enclosed volume vs voxel volume, area, watertightness."""
        mesh = self.mesh
        return {"mesh": self.tag, "faces": len(mesh.faces), "vertices": len(mesh.vertices),
                "volume": float(mesh.volume) if len(mesh.faces) else 0.0, "voxel_volume": self.voxel_volume,
                "area": float(mesh.area), "watertight": bool(mesh.is_watertight), "voxels": self.voxels}


def slab_planes(shape: Sequence[int], memory_limit: int | None = None) -> int:
    """Planes per slab so that one slab's work fits in a quarter of the available memory (or of ``memory_limit``);
    DeepSegError naming the memory needed when not even two planes fit."""
    plane = (shape[1] + 2) * (shape[2] + 2) * BYTES_PER_VOXEL
    have = available_memory() if memory_limit is None else int(memory_limit)
    check_memory(4 * 2 * plane, f"meshing slabs of two {shape[1]}x{shape[2]} planes", have)
    return max(2, have // 4 // plane)


def mask_surface(volume: np.ndarray, select: Callable[[np.ndarray], np.ndarray], spacing: Sequence[float], *,
                 origin: Sequence[int] = (0, 0, 0), slab: int | None = None,
                 memory_limit: int | None = None) -> tuple[Any, int]:
    """The closed marching-cubes surface of ``select(volume)`` and its voxel count.

    ``volume``: 3D (pln, row, col), memory-mapped is fine: it is read ``slab`` planes at a time (default:
    as many as fit in a quarter of the memory). ``select`` maps a block of values to a boolean mask.
    ``origin``: index of ``volume[0, 0, 0]`` in the full image (for crops). Returns ``(trimesh.Trimesh, voxels)``.
    """
    trimesh = need_post("trimesh")
    if volume.ndim != 3:
        raise InputError(f"meshes need a 3D label image; got shape {volume.shape}")
    planes = int(slab) if slab else slab_planes(volume.shape, memory_limit)
    if planes < 2:
        raise InputError(f"slab {planes}: a slab needs at least 2 planes")
    depth, verts, faces, voxels, count = volume.shape[0], [], [], 0, 0
    for z0 in range(0, max(depth - 1, 1), planes - 1):
        z1 = min(z0 + planes, depth)  # planes z0 .. z1-1; the next slab starts at z1-1
        mask = np.asarray(select(np.asarray(volume[z0:z1])), dtype=bool)
        voxels += int(mask[: None if z1 == depth else -1].sum())  # the shared plane counted once
        piece = _slab_mesh(mask, first=z0 == 0, last=z1 == depth)
        if piece is not None:
            v, f = piece
            v[:, 0] += z0
            verts.append(v)
            faces.append(f + count)
            count += len(v)
    if not faces:
        return trimesh.Trimesh(), voxels
    index = np.concatenate(verts) + np.asarray(origin, dtype=np.float64)
    physical = (index * np.asarray(spacing, dtype=np.float64))[:, ::-1]  # z, y, x -> x, y, z
    mesh = trimesh.Trimesh(physical, np.concatenate(faces), process=True)  # merges the slabs' shared vertices
    return mesh, voxels


def _slab_mesh(mask: np.ndarray, *, first: bool, last: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """Marching cubes (level 0.5) of one slab padded with background: rows and columns always, planes only at
    the volume's ends. Vertices in index coordinates relative to the slab's first plane; None if empty."""
    if not mask.any():
        return None
    measure = need_post("skimage.measure")
    padded = np.pad(mask.astype(np.float32), ((int(first), int(last)), (1, 1), (1, 1)))
    # Lorensen's tables resolve ambiguous faces the same way in every cell: a manifold, watertight surface
    # (Lewiner's interior tests can join four faces on one edge)
    verts, faces, _, _ = measure.marching_cubes(padded, 0.5, method="lorensen", allow_degenerate=False)
    verts = verts.astype(np.float64) - np.array([int(first), 1, 1])
    return verts, faces


def refine(mesh: Any, *, smooth: int = 0, smooth_method: str = "taubin", faces: int | None = None) -> Any:
    """Smooth (``smooth`` iterations of Taubin's or volume-preserving Laplacian smoothing) and decimate
    to at most ``faces`` faces (quadric decimation, fast-simplification)."""
    trimesh = need_post("trimesh")
    if smooth_method not in SMOOTHING:
        raise InputError(f"smoothing {smooth_method!r} is not known: expected one of {', '.join(SMOOTHING)}")
    if smooth < 0 or (faces is not None and faces < 4):
        raise InputError(f"smooth={smooth}, faces={faces}: expected smooth >= 0 and faces >= 4")
    if len(mesh.faces) == 0:
        return mesh
    if smooth and smooth_method == "taubin":
        trimesh.smoothing.filter_taubin(mesh, lamb=0.5, nu=0.53, iterations=int(smooth))
    elif smooth:
        trimesh.smoothing.filter_laplacian(mesh, lamb=0.5, iterations=int(smooth), volume_constraint=True)
    if faces is not None and len(mesh.faces) > faces:
        need_post("fast_simplification")
        closed = mesh.is_watertight
        mesh = mesh.simplify_quadric_decimation(face_count=int(faces))
        mesh.update_faces(mesh.nondegenerate_faces())  # collapsed and doubled faces would open the surface
        mesh.update_faces(mesh.unique_faces())
        mesh.remove_unreferenced_vertices()
        if closed and not mesh.is_watertight:
            warnings.warn(f"decimating to {faces} faces left the surface not watertight (thin structures collapse): "
                          "ask for more faces, or none, for a closed mesh")
    return mesh


def mesh_labels(labels: xr.DataArray, classes: Sequence[str | int], *, class_names: Sequence[str] | None = None,
                per_object: bool = False, smooth: int = 0, smooth_method: str = "taubin",
                faces: int | None = None, slab: int | None = None, connectivity: int | None = None,
                memory_limit: int | None = None) -> Iterator[Surface]:
    """Surfaces of a 3D label image (spacing from its attrs): one per class of ``classes`` (names or
    numbers), or with ``per_object`` one per connected object of each class, yielded one at a time."""
    volume = spatial_values(labels)
    if volume.ndim != 3:
        raise InputError(f"meshes need a 3D label image; {labels.name or 'the labels'} has dims {tuple(labels.dims)}")
    spacing = spacing_tuple(labels)
    values = [class_value(c, class_names) for c in classes]  # all checked before any work
    voxel = float(np.prod(spacing))
    for value in values:
        name = class_label(value, class_names)
        parts = _objects(volume, value, name, connectivity, memory_limit) if per_object else \
            [(name, volume, (lambda a, v=value: a == v), (0, 0, 0))]
        for tag, source, select, origin in parts:
            mesh, count = mask_surface(source, select, spacing, origin=origin, slab=slab, memory_limit=memory_limit)
            yield Surface(tag, refine(mesh, smooth=smooth, smooth_method=smooth_method, faces=faces), count,
                          count * voxel)


def _objects(volume: np.ndarray, value: int, name: str, connectivity: int | None,
             memory_limit: int | None) -> Iterator[tuple]:
    """``(tag, crop, select, origin)`` per connected object of class ``value`` (crop: its bounding box + 1 voxel);
    tags are ``<class name>-<object number>``, zero-padded."""
    from scipy import ndimage

    objects, count = instances(volume, value, connectivity=connectivity, memory_limit=memory_limit)
    width = len(str(count))
    for index, box in enumerate(ndimage.find_objects(objects), start=1):
        if box is None:
            continue
        grown = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, objects.shape))
        yield (f"{name}-{index:0{width}d}", objects[grown], (lambda a, i=index: a == i),
               tuple(s.start for s in grown))


def mesh_format(path: str | Path) -> str:
    """``stl``, ``ply`` or ``obj`` from a file name; InputError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"mesh file {str(path)!r}: expected a name ending in {', '.join(FORMATS)}")
    return suffix[1:]


def write_mesh(mesh: Any, path: str | Path) -> Path:
    """Write ``mesh`` atomically as binary STL, binary PLY or OBJ (by extension)."""
    from .fileutil import atomic_path

    kind = mesh_format(path)
    with atomic_path(path) as tmp:
        mesh.export(str(tmp), file_type=kind)
    return Path(path)


def mesh_paths(out: str | Path, tag: str, *, several: bool) -> Path:
    """``out`` itself for a single mesh, else ``<stem>-<tag><suffix>`` beside it."""
    out = Path(out)
    return out.with_name(f"{out.stem}-{tag}{out.suffix}") if several else out


def mesh_file(labels_path: str | Path, classes: Sequence[str | int], out: str | Path, *,
              class_names: Sequence[str] | None = None, spacing: Sequence[float] | None = None,
              per_object: bool = False, smooth: int = 0, smooth_method: str = "taubin", faces: int | None = None,
              slab: int | None = None, connectivity: int | None = None, axes: str | None = None,
              memory_limit: int | None = None) -> list[dict[str, Any]]:
    """Mesh a label file (memory-mapped where possible) into ``out`` (.stl/.ply/.obj); with several classes
    or ``per_object``, one file per mesh named ``<out stem>-<class>[-<object>]<suffix>``. Returns one
    summary per file (:meth:`Surface.summary` plus ``path``)."""
    from .fileutil import refuse_overwriting
    from .io import read_labels

    mesh_format(out)
    refuse_overwriting({"--out": out}, {"the label image": labels_path})
    labels = with_spacing(read_labels(labels_path, axes, mmap=True), spacing)
    class_names = class_names or labels.attrs.get("class_names")  # stored by deepseg predict
    several = per_object or len(classes) > 1
    written = []
    for surface in mesh_labels(labels, classes, class_names=class_names, per_object=per_object, smooth=smooth,
                               smooth_method=smooth_method, faces=faces, slab=slab, connectivity=connectivity,
                               memory_limit=memory_limit):
        if surface.voxels == 0:
            warnings.warn(f"{labels_path}: no voxels of {surface.tag}: no mesh written for it")
            continue
        path = mesh_paths(out, surface.tag, several=several)
        refuse_overwriting({"the mesh": path}, {"the label image": labels_path})
        write_mesh(surface.mesh, path)
        written.append({**surface.summary(), "path": str(path)})
    return written
