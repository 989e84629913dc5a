"""Surface meshes (engine.mesh, ``deepseg mesh``): marching cubes with the voxel size, watertight, slab-wise
equal to whole-volume, smoothing, decimation, STL/PLY/OBJ; the head CT after a short training (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

trimesh = pytest.importorskip("trimesh", reason="needs the post extra: pip install 'deepseg[post]'")
pytest.importorskip("skimage", reason="needs the post extra: pip install 'deepseg[post]'")

from engine.cli import main  # noqa: E402
from engine.errors import DeepSegError, InputError  # noqa: E402
from engine.io import read_labels, write_labels  # noqa: E402
from engine.mesh import mask_surface, mesh_file, mesh_labels, refine  # noqa: E402

SPACING = {"pln": 2.0, "row": 0.5, "col": 0.7}
CT = Path(__file__).resolve().parents[1] / ".data" / "ct_head_bone"


def ball(shape=(24, 60, 48), centre=(11.5, 30.0, 23.0), radius=(7.0, 24.0, 17.0)) -> np.ndarray:
    """An ellipsoid that is a sphere of radius ~12 physical units at spacing 2 x 0.5 x 0.7."""
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return ((z - centre[0]) / radius[0]) ** 2 + ((y - centre[1]) / radius[1]) ** 2 + \
        ((x - centre[2]) / radius[2]) ** 2 <= 1


def scene() -> np.ndarray:
    """Class 1: the ball; class 2: a bar touching three borders of the volume, and a small separate cube."""
    labels = ball().astype(np.uint8)
    labels[:, 55:, 30:] = 2  # touches the border: still closed (padded with background)
    labels[2:5, 2:6, 2:6] = 2
    return labels


def spacing() -> tuple[float, float, float]:
    return SPACING["pln"], SPACING["row"], SPACING["col"]


def test_sphere_mesh_volume_watertight_and_physical():
    mask = ball()
    mesh, voxels = mask_surface(mask, lambda a: a, spacing())
    voxel_volume = voxels * np.prod(spacing())
    assert voxels == mask.sum() and mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0  # outward normals
    assert mesh.volume == pytest.approx(voxel_volume, rel=0.02)
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * 7 * 2.0 * 24 * 0.5 * 17 * 0.7, rel=0.03)
    z, y, x = (np.nonzero(mask)[i] for i in range(3))
    low, high = mesh.bounds  # x, y, z order, physical: half a voxel beyond the outermost voxel centres
    assert low == pytest.approx([(x.min() - 0.5) * 0.7, (y.min() - 0.5) * 0.5, (z.min() - 0.5) * 2.0])
    assert high == pytest.approx([(x.max() + 0.5) * 0.7, (y.max() + 0.5) * 0.5, (z.max() + 0.5) * 2.0])


@pytest.mark.parametrize("slab", [2, 3, 5])
def test_slabs_give_the_whole_volume_mesh(slab):
    labels = scene()
    whole, whole_voxels = mask_surface(labels, lambda a: a == 2, spacing())
    pieces, voxels = mask_surface(labels, lambda a: a == 2, spacing(), slab=slab)
    assert voxels == whole_voxels == int((labels == 2).sum())
    assert pieces.is_watertight and whole.is_watertight
    assert pieces.volume == pytest.approx(whole.volume, rel=1e-12)
    assert pieces.area == pytest.approx(whole.area, rel=1e-12)
    assert (len(pieces.faces), len(pieces.vertices)) == (len(whole.faces), len(whole.vertices))
    assert np.array_equal(np.unique(pieces.vertices, axis=0), np.unique(whole.vertices, axis=0))
    assert pieces.body_count == 2


def test_memory_mapped_volume_read_in_slabs(tmp_path):
    np.save(tmp_path / "labels.npy", scene())
    mapped = np.load(tmp_path / "labels.npy", mmap_mode="r")
    seen = []

    def select(block: np.ndarray) -> np.ndarray:
        seen.append(len(block))
        return block == 2

    mesh, voxels = mask_surface(mapped, select, spacing(), slab=4)
    whole, _ = mask_surface(scene(), lambda a: a == 2, spacing())
    assert max(seen) == 4 and sum(seen) == 24 + len(seen) - 1  # 4 planes at a time, one shared with the next
    assert mesh.is_watertight and mesh.volume == pytest.approx(whole.volume, rel=1e-12)


def test_slabs_follow_the_memory_available():
    labels = scene()
    whole, _ = mask_surface(labels, lambda a: a == 1, spacing())
    budget = 4 * 62 * 50 * 24 * 4  # room for 4 planes of 60 x 48 (+ padding) per slab
    small, _ = mask_surface(labels, lambda a: a == 1, spacing(), memory_limit=budget)
    assert small.is_watertight and small.volume == pytest.approx(whole.volume, rel=1e-12)
    with pytest.raises(DeepSegError, match=r"meshing slabs of two 60x48 planes needs about .* GiB of memory but only"):
        mask_surface(labels, lambda a: a == 1, spacing(), memory_limit=1000)


def test_smoothing_keeps_the_volume_and_decimation_the_face_count():
    mesh, voxels = mask_surface(ball(), lambda a: a, spacing())
    voxel_volume = voxels * np.prod(spacing())
    for method in ("taubin", "laplacian"):
        smooth = refine(mesh.copy(), smooth=10, smooth_method=method)
        assert smooth.is_watertight and smooth.volume == pytest.approx(voxel_volume, rel=0.02)
        assert not np.allclose(smooth.vertices, mesh.vertices)  # it did move them
    small = refine(mesh.copy(), faces=1500)
    assert len(small.faces) <= 1500 < len(mesh.faces) // 2
    assert small.is_watertight and small.volume == pytest.approx(voxel_volume, rel=0.03)
    with pytest.raises(InputError, match="smoothing 'gauss' is not known"):
        refine(mesh, smooth=1, smooth_method="gauss")


@pytest.mark.parametrize("suffix", [".stl", ".ply", ".obj"])
def test_files_read_back(tmp_path, suffix):
    path = write_labels(tmp_path / "labels.tif", scene(), axes="ZYX", spacing=SPACING, unit="mm")
    (info,) = mesh_file(path, ["ball"], tmp_path / f"ball{suffix}", class_names=["background", "ball", "bar"])
    back = trimesh.load(tmp_path / f"ball{suffix}", force="mesh")
    assert info["path"] == str(tmp_path / f"ball{suffix}") and info["watertight"]
    assert back.is_watertight and len(back.faces) == info["faces"]
    assert back.volume == pytest.approx(info["volume"], rel=1e-5)
    assert back.volume == pytest.approx(info["voxel_volume"], rel=0.02)
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_per_object_and_several_classes(tmp_path):
    path = write_labels(tmp_path / "labels.tif", scene(), axes="ZYX", spacing=SPACING)
    written = mesh_file(path, ["2"], tmp_path / "bars.ply", per_object=True)
    assert [Path(w["path"]).name for w in written] == ["bars-2-1.ply", "bars-2-2.ply"]
    cube = trimesh.load(tmp_path / "bars-2-2.ply")  # numbered in raster order: the bar starts in plane 0
    assert cube.is_watertight and written[1]["voxels"] == 3 * 4 * 4
    assert cube.bounds[0] == pytest.approx([1.5 * 0.7, 1.5 * 0.5, 1.5 * 2.0])  # placed where it is in the image
    total = sum(w["voxels"] for w in written)
    assert total == int((scene() == 2).sum())
    both = mesh_file(path, ["1", "2"], tmp_path / "all.obj")
    assert [Path(w["path"]).name for w in both] == ["all-1.obj", "all-2.obj"]
    assert all(w["watertight"] for w in both + written)


def test_bad_requests(tmp_path):
    path = write_labels(tmp_path / "labels.tif", scene(), axes="ZYX")
    flat = write_labels(tmp_path / "flat.tif", scene()[0], axes="YX")
    with pytest.raises(InputError, match="expected a name ending in .stl, .ply, .obj"):
        mesh_file(path, ["1"], tmp_path / "x.vtk")
    with pytest.raises(InputError, match="meshes need a 3D label image"):
        mesh_file(flat, ["1"], tmp_path / "x.stl")
    with pytest.raises(InputError, match="class 'bone' is not known"):
        list(mesh_labels(read_labels(path), ["bone"]))
    with pytest.warns(UserWarning, match="no voxels of 7"):
        assert mesh_file(path, ["7"], tmp_path / "none.stl") == []
    assert not (tmp_path / "none.stl").exists()


def test_cli_mesh(tmp_path, capsys):
    path = write_labels(tmp_path / "labels.tif", scene(), axes="ZYX", spacing=SPACING, unit="mm")
    out = tmp_path / "bone.stl"
    assert main(["mesh", str(path), "--class", "bone", "--class-names", "background,bone,bar", "--out", str(out),
                 "--smooth", "5", "--faces", "2000", "--slab", "4"]) == 0
    text = capsys.readouterr().out
    assert f"{out}: " in text and "watertight" in text and "NOT" not in text
    mesh = trimesh.load(out)
    assert mesh.is_watertight and len(mesh.faces) <= 2000
    assert main(["mesh", str(path), "--class", "1", "--out", str(path)]) == 2
    assert "expected a name ending in .stl" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not (CT / "image.tif").is_file(), reason="needs the head CT in .data/ct_head_bone (make data)")
def test_head_ct_bone_mesh_after_a_short_training(tmp_path):
    """Train a tiny anisotropic 3D U-Net on the head CT for a few epochs, predict, mesh the bone: the mesh is
    watertight and encloses the voxel volume within 3 %."""
    from engine.metrics import evaluate
    from engine.prediction import predict_file
    from engine.training import train

    result = train(images=str(CT / "image.tif"), labels=str(CT / "label.tif"), out=str(tmp_path / "model"),
                   network="unet3d_aniso", network_options={"depth": 2, "filters": 4}, patch=[16, 64, 64],
                   epochs=3, steps_per_epoch=10, batch=2, lr=3e-3, class_names=["background", "bone"], seed=1,
                   validation_fraction=0.0, device="cpu", augmentation="default")  # as written (auto: light)
    predicted = tmp_path / "bone-labels.tif"
    predict_file(result.model_dir, CT / "image.tif", predicted, tile=[32, 128, 128], device="cpu")
    assert evaluate(predicted, CT / "label.tif").dice[1] > 0.5  # it found the bone
    (info,) = mesh_file(predicted, ["bone"], tmp_path / "bone.stl", class_names=["background", "bone"])
    mesh = trimesh.load(tmp_path / "bone.stl")
    assert info["watertight"] and mesh.is_watertight
    assert info["voxel_volume"] == pytest.approx(info["voxels"] * 1.5 * 0.957 * 0.957)
    assert mesh.volume == pytest.approx(info["voxel_volume"], rel=0.03)


def test_class_names_travel_from_predict_to_mesh(tmp_path, capsys):
    """`deepseg predict` stores the model's class names in the label TIFF, so `mesh --class <name>` needs no
    --class-names; a label file written with names by the Python API works the same."""
    from engine.io import write_image
    from engine.training import train

    rng = np.random.default_rng(4)
    volume = np.zeros((12, 32, 32), np.uint8)
    volume[3:9, 8:24, 8:24] = 1
    image = (volume * 100 + rng.normal(0, 5, volume.shape)).astype(np.float32)
    model = tmp_path / "model"
    train(images=[image], labels=[volume], axes="ZYX", out=str(model), network="unet2d",
          network_options={"depth": 2, "filters": 4}, patch=32, epochs=1, batch=2, steps_per_epoch=2,
          class_names=["background", "bone"], validation_fraction=0.0)
    write_image(tmp_path / "scan.tif", image, axes="ZYX")
    assert main(["predict", str(model), str(tmp_path / "scan.tif"), "--out", str(tmp_path / "labels.tif"),
                 "--quiet"]) == 0
    assert read_labels(tmp_path / "labels.tif").attrs["class_names"] == ["background", "bone"]
    write_labels(tmp_path / "truth.tif", volume, axes="ZYX", class_names=["background", "bone"])
    assert main(["mesh", str(tmp_path / "truth.tif"), "--class", "bone", "--out", str(tmp_path / "bone.stl")]) == 0
    assert (tmp_path / "bone.stl").stat().st_size > 0
    assert main(["mesh", str(tmp_path / "truth.tif"), "--class", "skin", "--out", str(tmp_path / "x.stl")]) == 2
    assert "skin" in capsys.readouterr().err
