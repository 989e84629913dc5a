"""SegNet, DeepLab v3+ (ResNet/MobileNet encoders), U-Net + encoder and the 2.5D Z2C networks.

The contract subclasses run the shared checks (shapes, a training step, save/reload) over a spread of
options; the tests below check what is specific to each architecture, and that full-size encoders
match the parameter counts of the published models (ResNet-18/50, MobileNet v1/v2 without their
classifiers). Widths are tiny so the file runs in about a minute on one core.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from engine.errors import InputError
from engine.networks import build
from engine.networks.deeplab import DeepLabV3Plus
from engine.networks.encoders import ENCODERS, build_encoder
from engine.networks.z2c import mirror_index, stack_z_context, z_context_indices
from network_contract import NetworkContract

TINY_DEEPLAB = dict(aspp_filters=8, decoder_filters=8, low_level_filters=4, encoder_width=0.125)


# ------------------------------------------------------------------------- the shared network contract


class TestSegNetContract(NetworkContract):
    name = "segnet2d"
    option_sets = [
        dict(depth=2, filters=4),
        dict(depth=3, filters=2, double_filters=True, convs_per_level=1, activation="elu"),
        dict(depth=1, filters=4, filter_size=5, norm="group", activation="swish"),
    ]
    input_shapes = [(16, 16), (19, 23)]


class TestDeepLabContract(NetworkContract):
    name = "deeplabv3plus"
    option_sets = [
        dict(TINY_DEEPLAB),  # DeepMIB: resnet18, output stride 16, one skip, projected ASPP
        dict(TINY_DEEPLAB, encoder="mobilenet_v1", skips=2, output_stride=8),  # CT study's best
        dict(TINY_DEEPLAB, encoder="mobilenet_v1", skips=2, aspp_mode="concat", activation="leaky_relu"),
        dict(TINY_DEEPLAB, encoder="resnet50_v2", skips=2, activation="clipped_relu"),
        dict(TINY_DEEPLAB, encoder="resnet50", output_stride=8, norm="group", activation="tanh"),
        dict(TINY_DEEPLAB, encoder="resnet18_v2", activation="silu", atrous_rates=[2, 4]),
        dict(TINY_DEEPLAB, encoder="mobilenet_v2", output_stride=8, skips=2),
    ]
    input_shapes = [(33, 47), (32, 40)]


class TestUNetEncoderContract(NetworkContract):
    name = "unet2d_encoder"
    option_sets = [
        dict(depth=3, filters=4, encoder_width=0.125),
        dict(encoder="resnet50", depth=2, filters=4, encoder_width=0.125, activation="leaky_relu"),
        dict(encoder="resnet18_v2", depth=4, filters=2, encoder_width=0.125, activation="elu"),
        dict(encoder="mobilenet_v1", depth=5, filters=2, encoder_width=0.125),
    ]
    input_shapes = [(32, 32), (35, 41)]


class TestZ2CUNetContract(NetworkContract):
    name = "z2c_unet2d"
    option_sets = [dict(z_context=3, depth=2, filters=4), dict(z_context=7, depth=1, filters=2, activation="tanh")]
    input_shapes = [(16, 16), (17, 20)]


class TestZ2CDeepLabContract(NetworkContract):
    name = "z2c_deeplabv3plus"
    option_sets = [
        dict(TINY_DEEPLAB, encoder="mobilenet_v1", skips=2),
        dict(TINY_DEEPLAB, z_context=3, output_stride=8, aspp_mode="concat"),
    ]
    input_shapes = [(33, 35)]


def _capture(module: nn.Module, store: list, what: str = "output") -> torch.utils.hooks.RemovableHandle:
    """Record a module's input or output tensors during forward."""

    def hook(_m, args, out):
        store.append(args[0] if what == "input" else out)

    return module.register_forward_hook(hook)


# ------------------------------------------------------------------------------------------ encoders


@pytest.mark.parametrize(
    "name, params",
    [
        # torchvision's counts minus the ImageNet classifier (and MobileNet v2's final 1x1 conv to 1280)
        ("resnet18", 11_176_512),
        ("resnet50", 23_508_032),
        ("mobilenet_v1", 3_206_976),
        ("mobilenet_v2", 1_811_712),
    ],
)
def test_full_size_encoders_match_published_parameter_counts(name, params):
    with torch.device("meta"):  # no memory, no init cost
        enc = build_encoder(name, in_channels=3)
    assert sum(p.numel() for p in enc.parameters()) == params


@pytest.mark.parametrize("name", sorted(ENCODERS))
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_encoder_reports_its_feature_maps(name, output_stride):
    enc = build_encoder(name, in_channels=3, output_stride=output_stride, width=0.125).eval()
    with torch.no_grad():
        feats = enc(torch.randn(1, 3, 32, 32))
    assert enc.reductions == tuple(min(2**i, output_stride) for i in range(1, 6))
    assert [f.shape[1] for f in feats] == list(enc.channels)
    assert [f.shape[2] for f in feats] == [32 // r for r in enc.reductions]


def test_output_stride_replaces_strides_with_dilation():
    def dilations(os_):
        enc = build_encoder("resnet18", output_stride=os_, width=0.125)
        return max(m.dilation[0] for m in enc.modules() if isinstance(m, nn.Conv2d))

    assert (dilations(32), dilations(16), dilations(8)) == (1, 2, 4)


def test_encoder_widths_and_stages():
    assert build_encoder("resnet18").channels == (64, 64, 128, 256, 512)
    assert build_encoder("resnet50", width=0.125).channels == (8, 32, 64, 128, 256)
    assert build_encoder("mobilenet_v1", width=0.25).channels == (16, 32, 64, 128, 256)
    assert build_encoder("resnet18_v2", width=0.125, stages=3).channels == (8, 8, 16)
    with pytest.raises(InputError, match="encoder 'vgg'"):
        build_encoder("vgg")
    with pytest.raises(InputError, match="output_stride"):
        build_encoder("resnet18", output_stride=4)


def test_mobilenet_v1_uses_depthwise_separable_convolutions():
    enc = build_encoder("mobilenet_v1", in_channels=1, width=0.25)
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    depthwise = [c for c in convs if c.groups > 1]
    # Howard et al. 2017 Table 1: 13 depthwise 3x3 convs, each followed by a 1x1 pointwise conv
    assert len(depthwise) == 13
    assert all(c.groups == c.in_channels == c.out_channels and c.kernel_size == (3, 3) for c in depthwise)
    assert len([c for c in convs if c.kernel_size == (1, 1)]) == 13
    # each conv of a separable unit is followed by BatchNorm and ReLU (CT study Fig 3B)
    unit = enc.stages[2][0]
    assert [type(m) for m in unit[0]] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]


def test_resnet_v2_is_pre_activation():
    v1 = build_encoder("resnet50", width=0.125)
    v2 = build_encoder("resnet50_v2", width=0.125)
    block_v1, block_v2 = v1.stages[2][0], v2.stages[2][0]
    assert not hasattr(block_v1, "pre")
    assert isinstance(block_v2.pre[0], nn.BatchNorm2d)  # norm -> act -> conv (He et al. 2016b)
    # the last stage ends with the v2 post-activation
    assert isinstance(v2.stages[4][-2], nn.BatchNorm2d) and isinstance(v2.stages[4][-1], nn.ReLU)


def test_encoder_accepts_any_channel_count_and_activation():
    enc = build_encoder("mobilenet_v2", in_channels=7, width=0.125, activation="elu")
    assert any(isinstance(m, nn.ELU) for m in enc.modules())
    assert enc(torch.randn(2, 7, 32, 32))[-1].shape[1] == enc.channels[-1]


# -------------------------------------------------------------------------------------------- SegNet


def test_segnet_upsamples_with_pooling_indices():
    net = build("segnet2d", in_channels=1, classes=2, depth=2, filters=4).eval()
    assert isinstance(net.unpool, nn.MaxUnpool2d)
    pooled, unpooled = [], []
    handles = [_capture(net.pool, pooled), _capture(net.unpool, unpooled)]
    with torch.no_grad():
        net(torch.randn(1, 1, 16, 16))
    for h in handles:
        h.remove()
    # decoder levels run deepest first; pair each un-pooling with the pooling it mirrors
    for (_, idx), up in zip(reversed(pooled), unpooled):
        allowed = torch.zeros_like(up).flatten(2)
        allowed.scatter_(2, idx.flatten(2), 1.0)
        allowed = allowed.view_as(up)
        assert allowed.sum() == up.numel() // 4  # exactly one position per 2x2 window
        assert torch.all(up[allowed == 0] == 0)  # zero wherever no index pointed


def test_segnet_shapes_and_options():
    net = build("segnet2d", in_channels=1, classes=2, depth=3, filters=4, double_filters=True,
                convs_per_level=3, filter_size=5)
    assert net.valid_input_shape((33, 8)) == (40, 8)
    assert [enc[0][0].out_channels for enc in net.encoders] == [4, 8, 16]
    assert len(net.encoders[0]) == 3 and net.encoders[0][0][0].kernel_size == (5, 5)
    with pytest.raises(InputError, match="pad it to"):
        net.check_input_shape((33, 8))
    with pytest.raises(InputError, match="filter_size"):
        build("segnet2d", filter_size=4)


# ------------------------------------------------------------------------------------------ DeepLab


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("shape", [(33, 47), (32, 32), (51, 35)])
def test_deeplab_output_matches_any_input_size(output_stride, shape):
    net = build("deeplabv3plus", in_channels=2, classes=3, output_stride=output_stride,
                encoder="mobilenet_v2", **TINY_DEEPLAB).eval()
    assert net.valid_input_shape(shape) == shape
    assert net.output_shape(shape) == shape
    with torch.no_grad():
        assert net(torch.randn(1, 2, *shape)).shape == (1, 3, *shape)


def test_deeplab_minimum_size_and_padding_is_invisible():
    net = build("deeplabv3plus", output_stride=16, encoder="resnet18", **TINY_DEEPLAB).eval()
    assert net.valid_input_shape((20, 40)) == (32, 40)
    with pytest.raises(InputError, match=r"pad it to \(32, 40\)"):
        net(torch.randn(1, 1, 20, 40))
    seen = []  # the spatial shape the encoder receives
    net.encoder.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[2:])))
    with torch.no_grad():
        # an input already a multiple of the stride reaches the encoder unpadded; others are padded up to one
        assert net(torch.randn(1, 1, 48, 48)).shape[2:] == (48, 48) and seen == [(48, 48)]
        assert net(torch.randn(1, 1, 45, 40)).shape[2:] == (45, 40) and seen[1] == (48, 48)
        # a padded input's top-left agrees with the network run on the reflect-padded tensor itself
        odd = torch.randn(1, 1, 45, 40)
        padded = torch.nn.functional.pad(odd, (0, 8, 0, 3), mode="reflect")
        assert torch.allclose(net(odd), net(padded)[:, :, :45, :40], atol=1e-5)


def test_deeplab_rates_follow_output_stride():
    def rates(**kw):
        net = build("deeplabv3plus", **TINY_DEEPLAB, **kw)
        return [b[0].dilation[0] for b in net.aspp.branches[1:]]

    assert rates(output_stride=16) == [6, 12, 18]
    assert rates(output_stride=8) == [12, 24, 36]
    assert rates(output_stride=16, atrous_rates=[2, 4]) == [2, 4]
    with pytest.raises(InputError, match="output_stride"):
        build("deeplabv3plus", output_stride=32)


def test_deeplab_aspp_sees_the_output_stride():
    for os_ in (8, 16):
        net = build("deeplabv3plus", output_stride=os_, encoder="resnet50", **TINY_DEEPLAB).eval()
        seen: list = []
        _capture(net.aspp, seen, "input")
        with torch.no_grad():
            net(torch.randn(1, 1, 36, 40))  # padded to a multiple of the output stride
        assert seen[0].shape[2:] == (-(-36 // os_), -(-40 // os_))


def test_skips2_adds_the_stride8_path():
    one = build("deeplabv3plus", skips=1, encoder="mobilenet_v1", **TINY_DEEPLAB).eval()
    two = build("deeplabv3plus", skips=2, encoder="mobilenet_v1", **TINY_DEEPLAB).eval()
    assert not hasattr(one, "reduce8")
    seen: list = []
    _capture(two.reduce8, seen, "input")
    with torch.no_grad():
        two(torch.randn(1, 1, 64, 64))
    # the stride-8 encoder map (mobilenet_v1 width 0.125: 32 channels) feeds the decoder
    assert seen[0].shape == (1, two.encoder.channels[2], 8, 8)
    assert two.fuse8[0].in_channels == two.aspp.out_channels + 4


def test_aspp_concat_differs_from_project():
    proj = build("deeplabv3plus", aspp_mode="project", **TINY_DEEPLAB)
    cat = build("deeplabv3plus", aspp_mode="concat", **TINY_DEEPLAB)
    assert proj.aspp.out_channels == 8 and proj.aspp.project is not None
    # 1x1 + three atrous + image pooling, passed on unprojected
    assert cat.aspp.project is None and cat.aspp.out_channels == 5 * 8
    assert cat.fuse4[0][0].in_channels == 5 * 8 + 4
    with pytest.raises(InputError, match="aspp_mode"):
        build("deeplabv3plus", aspp_mode="sum")


def test_deeplab_trains_with_batch_of_one():
    # the image-pooling branch is 1x1: BatchNorm there would fail with one sample
    net = build("deeplabv3plus", encoder="resnet18", **TINY_DEEPLAB).train()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.aspp.image_pool)
    loss = net(torch.randn(1, 1, 32, 32)).mean()
    loss.backward()


def test_deeplab_defaults_follow_deepmib():
    spec_defaults = build("deeplabv3plus").options
    assert spec_defaults["encoder"] == "resnet18" and spec_defaults["output_stride"] == 16
    assert spec_defaults["skips"] == 1 and spec_defaults["aspp_mode"] == "project"
    assert isinstance(build("deeplabv3plus", **TINY_DEEPLAB), DeepLabV3Plus)


# ---------------------------------------------------------------------------------- U-Net + encoder


@pytest.mark.parametrize("encoder", ["resnet18", "resnet50"])
def test_unet_encoder_skips_at_every_stride(encoder):
    net = build("unet2d_encoder", encoder=encoder, depth=3, filters=4, encoder_width=0.125).eval()
    seen: list = []
    for block in net.blocks:
        _capture(block, seen, "input")
    with torch.no_grad():
        out = net(torch.randn(1, 1, 32, 32))
    assert out.shape == (1, 2, 32, 32)
    ch = net.encoder.channels
    # strides 4, 2, 1: up-sampled decoder map (+ encoder map of that stride, none at full resolution)
    assert [t.shape[1:] for t in seen] == [(16 + ch[1], 8, 8), (8 + ch[0], 16, 16), (4, 32, 32)]


def test_unet_encoder_shape_rules():
    net = build("unet2d_encoder", depth=5, filters=4, encoder_width=0.125)
    assert net.valid_input_shape((40, 70)) == (64, 96)  # multiples of 32, at least 64
    assert len(net.encoder.stages) == 5
    assert len(build("unet2d_encoder", depth=2, filters=4, encoder_width=0.125).encoder.stages) == 2
    with pytest.raises(InputError, match="depth"):
        build("unet2d_encoder", depth=6)


# ---------------------------------------------------------------------------------------------- Z2C


def test_z2c_channels_and_attributes():
    net = build("z2c_unet2d", in_channels=2, classes=3, z_context=3, depth=2, filters=4)
    assert net.z_context == 3 and net.in_channels == 2
    assert net.net.encoders[0].conv1[0].in_channels == 6
    assert net(torch.randn(1, 6, 16, 16)).shape == (1, 3, 16, 16)
    with pytest.raises(InputError, match="stack_z_context"):
        net(torch.randn(1, 2, 16, 16))
    dl = build("z2c_deeplabv3plus", in_channels=1, classes=2, **TINY_DEEPLAB)
    assert dl.z_context == 5 and dl.net.encoder.stages[0][0].in_channels == 5
    assert dl.options["z_context"] == 5 and dl.options["encoder"] == "resnet18"


@pytest.mark.parametrize("bad", [1, 4, 11, 2.0, True])
def test_z2c_rejects_bad_z_context(bad):
    with pytest.raises(InputError, match="z_context"):
        build("z2c_unet2d", z_context=bad, depth=1, filters=2)


def test_stack_z_context_mirrors_at_the_ends():
    # C=2 channels; channel c of slice z holds 10*z + c
    vol = (10 * np.arange(4)[None, :, None, None] + np.arange(2)[:, None, None, None]) * np.ones((2, 4, 3, 5))
    first = stack_z_context(vol, 0, 5)
    assert first.shape == (10, 3, 5)
    # slices -2, -1, 0, 1, 2 -> 2, 1, 0, 1, 2 (reflect, edge not repeated), plane-major channels
    assert first[:, 0, 0].tolist() == [20, 21, 10, 11, 0, 1, 10, 11, 20, 21]
    last = stack_z_context(vol, 3, 3)
    assert last[:, 0, 0].tolist() == [20, 21, 30, 31, 20, 21]
    middle = stack_z_context(vol, 1, 3)
    assert middle[:, 0, 0].tolist() == [0, 1, 10, 11, 20, 21]
    # more context than slices: keep reflecting
    assert z_context_indices(0, 2, 9) == [0, 1, 0, 1, 0, 1, 0, 1, 0]
    assert stack_z_context(vol[:, :1], 0, 3)[:, 0, 0].tolist() == [0, 1, 0, 1, 0, 1]
    assert [mirror_index(i, 3) for i in (-1, 3, 4)] == [1, 1, 0]
    with pytest.raises(InputError):
        stack_z_context(vol[0], 0, 3)
    with pytest.raises(InputError):
        stack_z_context(vol, 4, 3)
