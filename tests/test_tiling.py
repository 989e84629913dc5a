"""Tile placement, blend weights and tiled prediction (tiny arrays, CPU, no timing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from engine.errors import Cancelled, InputError
from engine.tiling import ArraySink, TileSink, blend_weights, predict_tiled, tile_grid, tile_starts


def plus_one(x: torch.Tensor) -> torch.Tensor:
    return x + 1


def three_classes(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, 2 * x, -x], dim=1)


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


# ---------------------------------------------------------------------------------------- placement


@pytest.mark.parametrize(
    "size, tile, overlap, expected",
    [
        (10, 4, 0.25, [0, 3, 6]),
        (11, 4, 0.25, [0, 3, 6, 7]),
        (8, 8, 0.5, [0]),
        (3, 8, 0.5, [0]),
        (5, 2, 0.0, [0, 2, 3]),
        (6, 3, 0.9, [0, 1, 2, 3]),  # step never drops to 0
        (9, 4, 0.5, [0, 2, 4, 5]),
    ],
)
def test_tile_starts(size, tile, overlap, expected):
    assert tile_starts(size, tile, overlap) == expected


def test_tile_grid_is_c_ordered_product():
    assert tile_grid((5, 7), (4, 4), 0.5) == [(0, 0), (0, 2), (0, 3), (1, 0), (1, 2), (1, 3)]
    assert tile_grid((5, 7), (5, 4), (0.0, 0.5)) == [(0, 0), (0, 2), (0, 3)]


def test_tile_starts_match_monai():
    data_utils = pytest.importorskip("monai.data.utils")
    for size in (1, 7, 64, 100, 129):
        for tile in (1, 5, 16, 64):
            for overlap in (0.0, 0.25, 0.5, 0.7):
                if tile > size:
                    continue
                step = max(1, int(tile * (1 - overlap))) if tile != size else tile
                slices = data_utils.dense_patch_slices((size,), (tile,), (step,))
                assert [s[0].start for s in slices] == tile_starts(size, tile, overlap), (size, tile, overlap)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, "a", None])
def test_tile_starts_rejects_bad_overlap(bad):
    with pytest.raises(InputError, match="overlap"):
        tile_starts(10, 4, bad)


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_tile_starts_rejects_bad_tile(bad):
    with pytest.raises(InputError, match="tile"):
        tile_starts(10, bad, 0.25)


# ------------------------------------------------------------------------------------------ weights


def test_gaussian_weights():
    w = blend_weights((9, 8))
    assert w.dtype == np.float32 and w.shape == (9, 8)
    assert w.max() == 1.0 and w.min() > 0
    assert w[4, 3] == w[4, 4] == 1.0  # odd axis peaks at the centre voxel, even axis on the middle two
    np.testing.assert_allclose(w, w[::-1, ::-1])
    sigma = 9 * 0.125
    np.testing.assert_allclose(w[0, 3], np.exp(-(4**2) / (2 * sigma**2)), rtol=1e-5)


def test_weights_are_cached_and_read_only():
    w = blend_weights((6, 6, 6))
    assert blend_weights([6, 6, 6]) is w
    assert not w.flags.writeable
    with pytest.raises(ValueError):
        w[0, 0, 0] = 2


def test_weights_never_zero():
    w = blend_weights((200,), sigma_scale=0.01)  # exp underflows to 0 in float32 far from the centre
    assert w.min() > 0 and w.max() == 1


def test_mean_weights_are_ones():
    np.testing.assert_array_equal(blend_weights((3, 4), "mean"), np.ones((3, 4), np.float32))


def test_weights_bad_mode():
    with pytest.raises(InputError, match="blend"):
        blend_weights((4, 4), "median")


# ------------------------------------------------------------------------------------------ stitching


@pytest.mark.parametrize("blend", ["gaussian", "mean"])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
@pytest.mark.parametrize("shape, tile", [((1, 37, 29), (16, 12)), ((2, 11, 19, 13), (5, 8, 6))])
def test_plus_one_stitches_exactly(blend, overlap, shape, tile):
    x = rand(*shape)
    y = predict_tiled(x, plus_one, tile=tile, overlap=overlap, blend=blend, batch=3)
    assert y.dtype == np.float32 and y.shape == shape
    np.testing.assert_allclose(y, x + 1, atol=1e-6)


def test_k_output_channels():
    x = rand(1, 21, 18)
    y = predict_tiled(x, three_classes, tile=(8, 8), overlap=0.5)
    np.testing.assert_allclose(y, np.concatenate([x, 2 * x, -x]), atol=1e-6)


@pytest.mark.parametrize("pad_mode", ["reflect", "symmetric", "edge", "constant"])
def test_image_smaller_than_tile(pad_mode):
    x = rand(1, 5, 3, 1)
    y = predict_tiled(x, plus_one, tile=(8, 8, 4), pad_mode=pad_mode)
    np.testing.assert_allclose(y, x + 1, atol=1e-6)


def test_integer_input_is_cast_per_tile():
    x = np.arange(2 * 20 * 30, dtype=np.uint16).reshape(2, 20, 30)
    y = predict_tiled(x, plus_one, tile=(8, 8))
    np.testing.assert_allclose(y, x.astype(np.float32) + 1, rtol=1e-6)


def test_2d_tile_over_3d_stack_is_slice_by_slice():
    x = rand(2, 7, 20, 17)
    calls = []

    def predictor(t):
        calls.append(tuple(t.shape))
        return torch.cat([t.sum(1, keepdim=True), t[:, :1] * 0], dim=1)

    y = predict_tiled(x, predictor, tile=(8, 8), overlap=0.25, batch=5)
    np.testing.assert_allclose(y[0], x.sum(0), atol=1e-5)
    np.testing.assert_array_equal(y[1], 0)
    assert all(c[1:] == (2, 8, 8) for c in calls)
    assert max(c[0] for c in calls) == 5  # tiles of different slices share batches


def test_preprocess_sees_raw_batches():
    x = np.full((1, 12, 12), 1000, np.uint16)
    seen = []

    def scale(batch):
        seen.append(batch.dtype)
        return batch / 1000.0

    y = predict_tiled(x, plus_one, tile=(8, 8), preprocess=scale)
    np.testing.assert_allclose(y, 2.0, atol=1e-6)
    assert set(seen) == {np.dtype(np.uint16)}


# -------------------------------------------------------------------------------------- real networks


def valid_net3d() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(2, 4, 3), nn.ReLU(), nn.Conv3d(4, 3, 3)).eval()


@pytest.mark.parametrize("overlap", [0.0, 0.5])
def test_valid_padding_net_equals_untiled_on_padded_input(overlap):
    net = valid_net3d()  # halo 2
    x = rand(2, 9, 17, 14)
    y = predict_tiled(x, net, tile=(8, 10, 9), overlap=overlap, batch=2)
    with torch.inference_mode():
        padded = np.pad(x, [(0, 0)] + [(2, 2)] * 3, mode="reflect")
        expected = net(torch.from_numpy(padded)[None])[0].numpy()
    assert y.shape == (3, 9, 17, 14)
    np.testing.assert_allclose(y, expected, atol=1e-5)


@pytest.mark.parametrize("pad_mode", ["reflect", "symmetric", "edge", "constant"])
@pytest.mark.parametrize("shape, lead", [((1, 2, 4), (0, 0)), ((1, 1, 5), (1, 0))])
def test_valid_padding_on_tiny_image_matches_numpy_pad(pad_mode, shape, lead):
    torch.manual_seed(1)
    net = nn.Conv2d(1, 1, 7).eval()  # halo 3: wider than the image's short axis
    x = rand(*shape)
    y = predict_tiled(x, net, tile=(9, 9), pad_mode=pad_mode)
    # The output tile is 3x3; an axis shorter than that is centred in one tile (``lead`` voxels
    # before it), so the untiled equivalent pads by halo + lead before and halo + the rest after.
    pads = [(0, 0)] + [(3 + l, 3 + max(3, n) - n - l) for n, l in zip(shape[1:], lead)]
    padded = np.pad(x, pads, mode=pad_mode)
    with torch.inference_mode():
        full = net(torch.from_numpy(padded)[None])[0].numpy()
    expected = full[(slice(None), *(slice(l, l + n) for n, l in zip(shape[1:], lead)))]
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_same_padding_net_close_to_untiled_in_the_interior():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 2, 3, padding=1)).eval()
    x = rand(1, 40, 45)
    y = predict_tiled(x, net, tile=(16, 16), overlap=0.5)
    with torch.inference_mode():
        expected = net(torch.from_numpy(x)[None])[0].numpy()
    inner = (slice(None), slice(2, -2), slice(2, -2))
    assert np.abs(y[inner] - expected[inner]).max() < 1e-2 * np.abs(expected).max()


def valid_padding_networks() -> list[str]:
    from engine.networks import list_networks
    from engine.networks.registry import get_spec

    return [n for n in list_networks() if get_spec(n).defaults().get("padding") is not None]


def test_every_unet_family_supports_valid_padding():
    assert {"unet2d", "unet3d", "unet3d_aniso", "z2c_unet2d"} <= set(valid_padding_networks())


@pytest.mark.parametrize("name", valid_padding_networks())
def test_valid_padding_network_with_pooling_is_seamless_on_its_grid(name):
    """Tiles on multiples of the down-sampling factor give one untiled pass; tiles off it do not."""
    from engine.networks import build
    from engine.prediction import grid_factor

    torch.manual_seed(0)
    net = build(name, in_channels=1, classes=3, depth=2, filters=2, padding="valid").eval()
    tile = net.valid_input_shape((52,) * net.spatial_dims)
    out_tile = net.output_shape(tile)
    halo = [(t - o) // 2 for t, o in zip(tile, out_tile)]
    grid = grid_factor(net, tile)
    assert all(g > 1 for g in grid)
    # An image whose untiled pass (padded by the halo) is a valid input, over two output tiles large
    # (one tile along Y in 3D, to keep the test fast).
    wanted = [(2 * o + g + 1 if axis != 1 or len(tile) == 2 else o) + 2 * h
              for axis, (o, g, h) in enumerate(zip(out_tile, grid, halo))]
    size = [v - 2 * h for v, h in zip(net.valid_input_shape(wanted), halo)]
    x = rand(getattr(net, "z_context", 1), *size)
    with torch.inference_mode():
        padded = np.pad(x, [(0, 0)] + [(h, h) for h in halo], mode="reflect")
        untiled = net(torch.from_numpy(padded)[None])[0].numpy()
    tiled = predict_tiled(x, net, tile=tile, overlap=0.25, batch=4, grid=grid)
    np.testing.assert_allclose(tiled, untiled, atol=1e-5, rtol=0)
    off_grid = predict_tiled(x, net, tile=tile, overlap=0.25, batch=4)
    assert np.abs(off_grid - untiled).max() > 1e-3


def test_grid_places_tiles_on_multiples():
    assert tile_starts(11, 4, 0.25, multiple=2) == [0, 2, 4, 6, 8]
    assert tile_starts(20, 8, 0.25, multiple=4) == [0, 4, 8, 12]
    assert tile_starts(21, 8, 0.0, multiple=4) == [0, 8, 16]  # last tile ends 3 voxels beyond the axis
    assert tile_starts(8, 8, 0.5, multiple=4) == [0]
    for size in range(5, 40):
        starts = tile_starts(size, 8, 0.25, multiple=4)
        assert all(s % 4 == 0 for s in starts) and starts == sorted(set(starts))
        assert starts[-1] + 8 >= size > starts[-1] + 8 - 4
    assert tile_grid((9, 9), 4, 0.25, grid=(1, 3)) == [(r, c) for r in (0, 3, 5) for c in (0, 3, 6)]


def test_grid_with_region_and_small_image_is_exact():
    x = rand(1, 5, 23)
    whole = predict_tiled(x, plus_one, tile=(8, 8), grid=4)
    np.testing.assert_allclose(whole, x + 1, atol=1e-6)
    part = predict_tiled(x, plus_one, tile=(8, 8), grid=4, region=(slice(1, 4), slice(9, 23)))
    np.testing.assert_array_equal(part, whole[:, 1:4, 9:23])


# ------------------------------------------------------------------------------------ sinks, progress


def test_out_memmap_equals_in_memory(tmp_path):
    net = valid_net3d()
    x = rand(2, 23, 12, 10)
    expected = predict_tiled(x, net, tile=(8, 8, 8), overlap=0.25, batch=3)
    sink = np.lib.format.open_memmap(tmp_path / "p.npy", mode="w+", dtype=np.float32, shape=(3, 23, 12, 10))
    result = predict_tiled(x, net, tile=(8, 8, 8), overlap=0.25, batch=3, out=sink)
    assert result is sink
    np.testing.assert_allclose(np.asarray(sink), expected, atol=1e-6)


def test_out_with_slices_and_padding(tmp_path):
    x = rand(1, 9, 5, 30)
    sink = np.zeros((3, 9, 5, 30), np.float32)
    predict_tiled(x, three_classes, tile=(8, 8), overlap=0.25, batch=4, out=sink)
    np.testing.assert_allclose(sink, np.concatenate([x, 2 * x, -x]), atol=1e-6)


def test_input_memmap_is_read_not_copied(tmp_path):
    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint16, shape=(1, 30, 26))
    x[:] = np.arange(30 * 26).reshape(1, 30, 26)
    y = predict_tiled(np.load(tmp_path / "x.npy", mmap_mode="r"), plus_one, tile=(16, 16))
    np.testing.assert_allclose(y, x + 1.0, rtol=1e-6)


def test_progress_reports_every_batch_and_cancels():
    seen = []
    predict_tiled(rand(1, 20, 20), plus_one, tile=(8, 8), overlap=0.0, batch=4, progress=seen.append)
    assert [(p.stage, p.done, p.total) for p in seen] == [("predict", 4, 9), ("predict", 8, 9), ("predict", 9, 9)]

    with pytest.raises(Cancelled):
        predict_tiled(rand(1, 20, 20), plus_one, tile=(8, 8), overlap=0.0, batch=4, progress=lambda p: p.done < 8)


def test_output_shape_must_not_change():
    calls = []

    def flaky(x):
        calls.append(1)
        return x if len(calls) == 1 else x[:, :, 1:-1, 1:-1]

    with pytest.raises(InputError, match="must not change"):
        predict_tiled(rand(1, 20, 20), flaky, tile=(8, 8), batch=2)


def test_default_device_follows_module_parameters():
    net = valid_net3d()
    y = predict_tiled(rand(2, 6, 6, 6), net, tile=(6, 6, 6))
    assert y.shape == (3, 6, 6, 6)


# -------------------------------------------------------------------------------- regions and sinks


class RecordingSink:
    """A TileSink that checks what it receives and keeps every write."""

    def __init__(self, shape: tuple[int, ...]):
        self.writes: list[tuple[tuple[slice, ...], np.ndarray]] = []
        self.coverage = np.zeros(shape, np.int32)

    def write(self, region, values):
        assert values.dtype == np.float32 and values.shape[1:] == tuple(r.stop - r.start for r in region)
        self.writes.append((region, values.copy()))
        self.coverage[region] += 1


def coordinate_image(shape: tuple[int, ...]) -> np.ndarray:
    """One channel per spatial axis holding that axis' coordinate (so a predictor sees where a tile is)."""
    return np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))


def touching(shape, tile, overlap, region) -> set[tuple[int, ...]]:
    """Tiles of a whole-image run (tile smaller than the image, same padding) whose window meets ``region``."""
    return {c for c in tile_grid(shape, tile, overlap)
            if all(s < r.stop and s + t > r.start for s, t, r in zip(c, tile, region))}


@pytest.mark.parametrize(
    "shape, tile, region",
    [
        ((37, 29), (16, 12), (slice(5, 20), slice(3, 17))),
        ((37, 29), (16, 12), (slice(36, 37), slice(0, 1))),
        ((37, 29), (16, 12), (slice(0, 37), slice(0, 29))),
        ((11, 19, 13), (5, 8, 6), (slice(4, 9), slice(10, 19), slice(2, 3))),
    ],
)
def test_region_equals_whole_image_and_runs_only_touching_tiles(shape, tile, region):
    x = coordinate_image(shape)
    seen: list[tuple[int, ...]] = []

    def recording_plus_one(t):
        seen.extend(tuple(int(v) for v in t[i, :, *(0,) * len(shape)]) for i in range(t.shape[0]))
        return t + 1

    whole = predict_tiled(x, plus_one, tile=tile, overlap=0.25, batch=3)
    part = predict_tiled(x, recording_plus_one, tile=tile, overlap=0.25, batch=3, region=region)
    np.testing.assert_array_equal(part, whole[(slice(None), *region)])
    expected = touching(shape, tile, 0.25, region)
    assert sorted(seen) == sorted(expected) and len(seen) == len(expected)
    assert len(expected) < len(tile_grid(shape, tile, 0.25)) or region == tuple(slice(0, n) for n in shape)


def test_region_of_a_real_network_equals_whole_image():
    net = valid_net3d()
    x = rand(2, 23, 17, 14)
    whole = predict_tiled(x, net, tile=(8, 9, 8), overlap=0.5, batch=3)
    for region in [(slice(3, 12), slice(5, 17), slice(0, 7)), (slice(20, 23), slice(0, 2), slice(13, 14))]:
        part = predict_tiled(x, net, tile=(8, 9, 8), overlap=0.5, batch=2, region=region)
        np.testing.assert_allclose(part, whole[(slice(None), *region)], atol=1e-6, rtol=0)


def test_region_of_a_same_padding_network_on_a_stack_slice_by_slice():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 2, 3, padding=1)).eval()
    x = rand(1, 5, 30, 26)
    whole = predict_tiled(x, net, tile=(12, 12), batch=4)
    region = (slice(1, 4), slice(7, 19), slice(20, 26))
    part = predict_tiled(x, net, tile=(12, 12), batch=4, region=region)
    np.testing.assert_allclose(part, whole[(slice(None), *region)], atol=1e-6, rtol=0)


@pytest.mark.parametrize("region", [None, (slice(4, 31), slice(2, 9), slice(5, 6))])
def test_sink_gets_every_voxel_once_in_increasing_order(region):
    net = valid_net3d()
    x = rand(2, 33, 12, 10)
    sink = RecordingSink((33, 12, 10))
    assert predict_tiled(x, net, tile=(8, 8, 8), overlap=0.25, batch=3, out=sink, region=region) is sink
    box = region or tuple(slice(0, n) for n in (33, 12, 10))
    expected_coverage = np.zeros((33, 12, 10), np.int32)
    expected_coverage[box] = 1
    np.testing.assert_array_equal(sink.coverage, expected_coverage)
    firsts = [r[0] for r, _ in sink.writes]
    assert len(firsts) > 1  # streamed in several slabs, not one block at the end
    assert [f.start for f in firsts] == sorted(f.start for f in firsts)
    assert all(a.stop == b.start for a, b in zip(firsts, firsts[1:]))
    assert all(r[1:] == box[1:] for r, _ in sink.writes)
    assert max(f.stop - f.start for f in firsts) <= 4  # at most one output tile (8 - 2 * halo) per write
    whole = predict_tiled(x, net, tile=(8, 8, 8), overlap=0.25, batch=3)
    streamed = np.concatenate([v for _, v in sink.writes], axis=1)
    np.testing.assert_allclose(streamed, whole[(slice(None), *box)], atol=1e-6, rtol=0)


def test_array_out_with_region_writes_only_the_region():
    x = rand(1, 20, 24)
    out = np.full((1, 20, 24), np.nan, np.float32)
    region = (slice(3, 9), slice(10, 24))
    assert predict_tiled(x, plus_one, tile=(8, 8), out=out, region=region) is out
    np.testing.assert_allclose(out[(slice(None), *region)], x[(slice(None), *region)] + 1, atol=1e-6)
    outside = np.ones((20, 24), bool)
    outside[region] = False
    assert np.isnan(out[0][outside]).all()


def test_array_sink_with_origin_takes_a_block():
    x = rand(1, 20, 24)
    region = (slice(3, 9), slice(10, 24))
    block = np.zeros((1, 6, 14), np.float32)
    predict_tiled(x, plus_one, tile=(8, 8), out=ArraySink(block, origin=(3, 10)), region=region)
    np.testing.assert_allclose(block, x[:, 3:9, 10:24] + 1, atol=1e-6)
    assert isinstance(ArraySink(block), TileSink) and isinstance(RecordingSink((1,)), TileSink)


def test_options_are_keyword_only_and_checked():
    with pytest.raises(TypeError):
        predict_tiled(rand(1, 8, 8), plus_one, (8, 8))  # type: ignore[misc]
    with pytest.raises(InputError, match=r"unknown option 'batch_size' \(did you mean 'batch'\?\)"):
        predict_tiled(rand(1, 8, 8), plus_one, tile=(8, 8), batch_size=2)


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(array=np.zeros(5, np.float32)), "channel-first"),
        (dict(tile=(4,)), "tile"),
        (dict(tile=(4, 4, 4, 4)), "tile"),
        (dict(tile=(0, 4, 4)), "tile size"),
        (dict(overlap=1.0), "overlap"),
        (dict(overlap=(0.1, 0.2)), "overlap"),
        (dict(blend="max"), "blend"),
        (dict(batch=0), "batch"),
        (dict(grid=0), "grid"),
        (dict(grid=(2, 2)), "grid"),
        (dict(region=(slice(0, 3),)), "region"),
        (dict(region=(slice(0, 3), slice(0, 3), slice(4, 4))), "empty"),
        (dict(region=(slice(0, 3), slice(0, 3), slice(0, 9))), "outside"),
        (dict(region=(slice(0, 3), slice(0, 3), slice(0, 6, 2))), "step"),
        (dict(pad_mode="wrap"), "pad_mode"),
        (dict(out=np.zeros((2, 6, 6, 6), np.float32)), "out"),
        (dict(predictor=lambda x: x[..., 1:]), "valid padding"),
        (dict(predictor=lambda x: x[:, :, 0]), "predictor returned"),
    ],
)
def test_bad_input_raises_input_error(kwargs, match):
    args = dict(predictor=plus_one, array=np.zeros((1, 6, 6, 6), np.float32), tile=(4, 4, 4))
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        predict_tiled(args.pop("array"), args.pop("predictor"), **args)
