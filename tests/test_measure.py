"""Objects and measurements (engine.measure, ``deepseg measure``): instance labels, per-object table, CSV."""

from __future__ import annotations

import csv

import numpy as np
import pytest

pytest.importorskip("skimage", reason="needs the post extra: pip install 'deepseg[post]'")

from engine.cli import main  # noqa: E402
from engine.errors import DeepSegError, InputError  # noqa: E402
from engine.io import read_labels, write_labels  # noqa: E402
from engine.measure import (class_value, instances, measure_file, measure_labels, measure_objects,  # noqa: E402
                            perimeter, surface_area)


def box_area(a: int, b: int, c: int, s: tuple[float, float, float]) -> float:
    """Exact marching-cubes (level 0.5) surface of a box of a x b x c voxels: flat faces, chamfered edges
    (strips half a voxel wide each way) and one triangle per corner."""
    (sa, sb, sc), (la, lb, lc) = s, ((a - 1) * s[0], (b - 1) * s[1], (c - 1) * s[2])
    faces = 2 * (la * lb + lb * lc + la * lc)
    edges = 4 * (la * np.hypot(sb / 2, sc / 2) + lb * np.hypot(sa / 2, sc / 2) + lc * np.hypot(sa / 2, sb / 2))
    corners = 8 * 0.5 * np.sqrt((sb * sc / 4) ** 2 + (sa * sc / 4) ** 2 + (sa * sb / 4) ** 2)
    return faces + edges + corners


def scene() -> np.ndarray:
    """Class 2: a 4x6x9 box, a 3x3x3 cube and a voxel touching the cube by a corner only; class 1 around."""
    labels = np.zeros((12, 20, 24), np.uint8)
    labels[:, :, :3] = 1
    labels[1:5, 2:8, 4:13] = 2
    labels[6:9, 10:13, 14:17] = 2
    labels[9, 13, 17] = 2  # corner neighbour of the cube
    return labels


def test_class_by_name_or_number():
    names = ["background", "bone", "Skin"]
    assert class_value("bone", names) == 1 and class_value("skin", names) == 2 and class_value(" 2 ", names) == 2
    assert class_value(5) == 5
    with pytest.raises(InputError, match="class 'nucleus' is not known: expected one of background, bone, Skin"):
        class_value("nucleus", names)
    with pytest.raises(InputError, match="background"):
        class_value("0")


def test_instances_connectivity_and_dtype():
    labels = scene()
    objects, count = instances(labels, 2)
    assert objects.dtype == np.uint16 and count == 2  # full connectivity: the corner voxel joins the cube
    assert objects[9, 13, 17] == objects[7, 11, 15] != 0
    faces_only, count = instances(labels, 2, connectivity=1)
    assert count == 3 and faces_only[9, 13, 17] not in (0, faces_only[7, 11, 15])
    assert set(np.unique(objects[labels != 2])) == {0}
    with pytest.raises(InputError, match="connectivity 4"):
        instances(labels, 2, connectivity=4)


def test_more_than_65535_objects_are_uint32():
    grid = np.zeros((520, 520), np.uint8)
    grid[::2, ::2] = 1  # 260 x 260 isolated pixels
    objects, count = instances(grid, 1)
    assert count == 260 * 260 and objects.dtype == np.uint32 and int(objects.max()) == count


def test_not_enough_memory_says_how_much():
    with pytest.raises(DeepSegError, match=r"labelling the objects of a 12x20x24 image needs about 0\.00 GiB"):
        instances(scene(), 2, memory_limit=100)


def test_measurements_are_exact_on_boxes():
    spacing = (2.0, 0.5, 0.7)
    objects, _ = instances(scene(), 2, connectivity=1)
    rows = measure_objects(objects, spacing, class_name="bone", unit="mm")
    assert [r["label"] for r in rows] == [1, 2, 3] and {r["class"] for r in rows} == {"bone"}
    box, cube, dot = rows
    assert box["voxels"] == 4 * 6 * 9 and box["volume"] == pytest.approx(4 * 6 * 9 * 2.0 * 0.5 * 0.7)
    assert box["surface_area"] == pytest.approx(box_area(4, 6, 9, spacing))
    assert cube["surface_area"] == pytest.approx(box_area(3, 3, 3, spacing))
    assert (box["centroid_z"], box["centroid_y"], box["centroid_x"]) == pytest.approx((2.5 * 2.0, 4.5 * 0.5, 8 * 0.7))
    assert (box["bbox_z0"], box["bbox_y0"], box["bbox_x0"], box["bbox_z1"], box["bbox_y1"], box["bbox_x1"]) == \
        (1, 2, 4, 5, 8, 13)
    assert dot["voxels"] == 1 and dot["bbox_z0"] == 9 and box["unit"] == "mm"


def test_sphere_volume_and_area_with_anisotropic_voxels():
    """A sphere of radius 10 sampled at 2 x 0.5 x 0.5: volume within 2 %; the marching-cubes area of the
    staircase is a known over-estimate of the smooth sphere's (here ~20 %, from the coarse z steps)."""
    z, y, x = np.ogrid[:16, :56, :56]
    ball = ((z * 2.0 - 15) ** 2 + (y * 0.5 - 14) ** 2 + (x * 0.5 - 14) ** 2) <= 100
    objects, _ = instances(ball.astype(np.uint8), 1)
    (row,) = measure_objects(objects, (2.0, 0.5, 0.5))
    assert row["volume"] == pytest.approx(4 / 3 * np.pi * 1000, rel=0.02)
    assert 1.0 < row["surface_area"] / (4 * np.pi * 100) < 1.25
    assert (row["centroid_z"], row["centroid_y"], row["centroid_x"]) == pytest.approx((15.0, 14.0, 14.0))


def test_2d_area_and_perimeter():
    labels = np.zeros((30, 40), np.uint8)
    labels[3:8, 5:12] = 1  # 5 x 7 rectangle
    labels[20:25, 20:30] = 1
    labels[21:24, 22:28] = 0  # a ring: its hole's contour counts too
    objects, count = instances(labels, 1)
    rows = measure_objects(objects, (0.5, 0.25))
    assert count == 2 and "volume" not in rows[0] and "centroid_z" not in rows[0]
    assert rows[0]["area"] == pytest.approx(35 * 0.125)
    assert rows[0]["perimeter"] == pytest.approx(2 * 4 * 0.5 + 2 * 6 * 0.25 + 4 * np.hypot(0.25, 0.125))
    assert rows[1]["perimeter"] > perimeter(np.ones((5, 10), bool), (0.5, 0.25))
    assert surface_area(np.ones((2, 2, 2), bool), (1, 1, 1)) == pytest.approx(box_area(2, 2, 2, (1, 1, 1)))


def test_measure_labels_uses_the_images_spacing(tmp_path):
    path = write_labels(tmp_path / "labels.tif", scene(), axes="ZYX", spacing={"pln": 2.0, "row": 0.5, "col": 0.7},
                        unit="um")
    labels = read_labels(path)
    objects, rows = measure_labels(labels, "cell", class_names=["background", "other", "cell"])
    assert objects.shape == labels.shape and len(rows) == 2
    assert rows[0]["class"] == "cell" and rows[0]["unit"] == "µm"  # the reader writes microns its way
    assert rows[0]["volume"] == pytest.approx(4 * 6 * 9 * 0.7)
    with pytest.raises(InputError, match="spacing '1.0,2.0' does not fit a 3D image"):
        measure_file(path, 2, spacing=[1.0, 2.0])


def test_cli_measure_writes_csv_and_instances(tmp_path, capsys):
    path = write_labels(tmp_path / "labels.tif", scene(), axes="ZYX", spacing={"pln": 2.0, "row": 0.5, "col": 0.7},
                        unit="mm")
    table, objects = tmp_path / "objects.csv", tmp_path / "instances.tif"
    assert main(["measure", str(path), "--class", "nucleus", "--class-names", "background,other,nucleus",
                 "--csv", str(table), "--instances", str(objects), "--spacing", "1,1,1", "--connectivity", "1"]) == 0
    assert "3 objects of class nucleus" in capsys.readouterr().out
    with open(table) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and rows[0]["class"] == "nucleus"
    assert float(rows[0]["volume"]) == pytest.approx(216.0) and int(rows[2]["voxels"]) == 1  # --spacing 1,1,1
    written = read_labels(objects)
    assert written.attrs["spacing"] == {"pln": 1.0, "row": 1.0, "col": 1.0}
    assert int(written.values.max()) == 3 and int((written.values == 1).sum()) == 216
    assert not list(tmp_path.glob(".*"))  # no temporary files left
    assert main(["measure", str(path), "--class", "nucleus", "--csv", str(tmp_path / "x.csv")]) == 2
    assert "class 'nucleus' is not known" in capsys.readouterr().err
    assert main(["measure", str(path), "--class", "2", "--csv", str(path)]) == 2  # never overwrites its input
    assert "deepseg never overwrites its inputs" in capsys.readouterr().err


def test_cli_measure_takes_class_names_from_a_model(tmp_path, tiny_model, capsys):
    model, _ = tiny_model  # classes background, class1
    path = write_labels(tmp_path / "labels.tif", (scene() == 2).astype(np.uint8), axes="ZYX")
    assert main(["measure", str(path), "--class", "class1", "--model", str(model), "--csv",
                 str(tmp_path / "o.csv")]) == 0
    assert "2 objects of class class1" in capsys.readouterr().out
