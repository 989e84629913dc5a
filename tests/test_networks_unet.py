"""U-Nets (2D, 3D, 3D anisotropic): the shared network contract over many option sets, shape rules,
anisotropic layout, option errors, registry behaviour and the measured receptive field."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from engine.errors import InputError
from engine.networks import SegmentationNetwork, build, get_spec, list_networks
from engine.networks.analysis import ReceptiveField, layer_count, parameter_count, receptive_field, summarize
from engine.networks.layers import ACTIVATIONS
from network_contract import NetworkContract


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------ the contract


class TestUNet2d(NetworkContract):
    name, spatial_dims = "unet2d", 2
    option_sets = [
        dict(depth=1, filters=4),
        dict(depth=2, filters=4, activation="leaky_relu", norm="instance", upsample="linear"),
        dict(depth=3, filters=2, activation="elu", norm="group", padding="valid", dropout=0.2),
        dict(depth=4, filters=4, max_filters=8, activation="tanh", norm="none"),
        dict(depth=2, filters=3, filter_size=5, activation="swish", padding="valid"),
        dict(depth=1, filters=4, activation="clipped_relu", padding="valid", upsample="linear"),
    ]
    input_shapes = [(16, 16), (19, 23)]


class TestUNet3d(NetworkContract):
    name, spatial_dims = "unet3d", 3
    option_sets = [
        dict(depth=1, filters=4),
        dict(depth=2, filters=2, activation="silu", norm="instance", upsample="linear"),
        dict(depth=3, filters=2, activation="leaky_relu", norm="group"),
        dict(depth=1, filters=2, activation="elu", padding="valid"),
        dict(depth=2, filters=2, norm="none", padding="valid", dropout=0.1),
    ]
    input_shapes = [(8, 8, 8), (9, 10, 12)]


class TestUNet3dAniso(NetworkContract):
    name, spatial_dims = "unet3d_aniso", 3
    option_sets = [
        dict(depth=1, filters=4),
        dict(depth=2, filters=2, activation="clipped_relu", norm="instance"),
        dict(depth=4, filters=2, max_filters=8, activation="tanh"),
        dict(depth=2, filters=2, padding="valid", upsample="linear"),
    ]
    input_shapes = [(4, 16, 16), (5, 17, 18)]


def test_the_contract_covers_every_activation():
    used = {o.get("activation", "relu") for c in (TestUNet2d, TestUNet3d, TestUNet3dAniso) for o in c.option_sets}
    assert used == set(ACTIVATIONS)


# -------------------------------------------------------------------------------------- registry


def test_registry_lists_the_unets():
    assert {"unet2d", "unet3d", "unet3d_aniso"} <= set(list_networks())
    assert get_spec("unet3d_aniso").spatial_dims == 3 and get_spec("unet2d").spatial_dims == 2


def test_unknown_network_suggests_close_names():
    with pytest.raises(InputError, match="unet2d"):
        build("unet2")


def test_unknown_option_lists_accepted_options():
    with pytest.raises(InputError) as err:
        build("unet2d", filter=4)
    for option in ("depth", "filters", "filter_size", "padding", "activation", "norm", "dropout", "upsample"):
        assert option in str(err.value)


@pytest.mark.parametrize("classes", [0, 1])
def test_fewer_than_two_classes_is_an_error(classes):
    with pytest.raises(InputError, match="classes"):
        build("unet2d", classes=classes, filters=2)


def test_defaults_follow_deepmib_and_nnunet():
    assert get_spec("unet2d").defaults() == dict(
        depth=3, filters=32, max_filters=512, filter_size=3, padding="same", activation="relu",
        norm="batch", dropout=0.0, upsample="transpose", stem="double",
    )
    assert get_spec("unet3d").defaults()["max_filters"] == 320
    assert get_spec("unet3d_aniso").defaults()["max_filters"] == 320


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(depth=0), "depth"),
        (dict(depth=2.5), "depth"),
        (dict(filters=0), "filters"),
        (dict(filters=True), "filters"),
        (dict(filter_size=4), "filter_size"),
        (dict(filter_size=0), "filter_size"),
        (dict(filter_size="3"), "filter_size"),
        (dict(filters=8, max_filters=4), "max_filters"),
        (dict(padding="full"), "padding"),
        (dict(activation="sigmoidal"), "activation"),
        (dict(norm="layer"), "norm"),
        (dict(dropout=1.0), "dropout"),
        (dict(upsample="nearest"), "upsample"),
    ],
)
def test_bad_options_are_input_errors(options, message):
    with pytest.raises(InputError, match=message):
        build("unet2d", **options)


# ---------------------------------------------------------------------------------- architecture


def test_filters_double_per_level_up_to_max_filters():
    net = build("unet2d", depth=3, filters=4, max_filters=16)
    assert net.level_filters == [4, 8, 16, 16]
    assert [e.conv2[0].out_channels for e in net.encoders] == [4, 8, 16]
    assert net.bottleneck.conv2[0].out_channels == 16
    assert net.head.in_channels == 4 and net.head.out_channels == 2


def test_anisotropic_layout_is_in_plane_at_the_top_level_only():
    net = build("unet3d_aniso", depth=3, filters=2)
    conv = lambda block: [block.conv1[0].kernel_size, block.conv2[0].kernel_size]  # noqa: E731
    assert conv(net.encoders[0]) == [(1, 3, 3)] * 2
    assert conv(net.decoders[0].conv) == [(1, 3, 3)] * 2
    assert net.downsamplers[0].kernel_size == (1, 2, 2) and net.decoders[0].up.stride == (1, 2, 2)
    for level in (1, 2):
        assert conv(net.encoders[level]) == [(3, 3, 3)] * 2
        assert net.downsamplers[level].kernel_size == (2, 2, 2) and net.decoders[level].up.stride == (2, 2, 2)
    assert conv(net.bottleneck) == [(3, 3, 3)] * 2


def test_linear_upsampling_and_dropout_modules():
    net = build("unet2d", depth=2, filters=2, upsample="linear", dropout=0.3)
    assert isinstance(net.decoders[0].up[0], nn.Upsample)
    assert isinstance(net.dropout, nn.Dropout) and net.dropout.p == 0.3
    assert isinstance(build("unet2d", depth=1, filters=2).dropout, nn.Identity)


def test_kaiming_initialisation():
    net = build("unet2d", depth=1, filters=32, norm="none")
    conv = net.bottleneck.conv1[0]  # 32 -> 64 channels, 3x3: 18k weights, a tight std estimate
    expected = math.sqrt(2.0 / (32 * 9))
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert torch.count_nonzero(conv.bias) == 0


# ------------------------------------------------------------------------------------ shape rules


def test_same_padding_needs_multiples_of_two_to_the_depth():
    net = build("unet2d", depth=3, filters=2)
    assert net.valid_input_shape((1, 8)) == (8, 8)
    assert net.valid_input_shape((17, 24)) == (24, 24)
    assert net.output_shape((24, 16)) == (24, 16)


def test_anisotropic_z_needs_one_pooling_less():
    net = build("unet3d_aniso", depth=3, filters=2)
    assert net.valid_input_shape((5, 20, 20)) == (8, 24, 24)
    assert net.valid_input_shape((4, 8, 8)) == (4, 8, 8)
    assert build("unet3d_aniso", depth=1, filters=2).valid_input_shape((5, 7, 7)) == (5, 8, 8)


def test_valid_padding_rules_match_the_forward_pass():
    # Accepted sizes are A + P*s for s >= s_min (A=12, P=4, s_min=8 for depth 2 and 3x3 filters).
    net = build("unet2d", depth=2, filters=2, padding="valid", norm="none").eval()
    accepted = [s for s in range(1, 70) if net.valid_input_shape((s, 44)) == (s, 44)]
    assert accepted == list(range(44, 70, 4))
    assert net.valid_input_shape((1, 1)) == (44, 44) and net.output_shape((44, 44)) == (4, 4)
    for size in accepted:
        with torch.no_grad():
            out = net(torch.randn(1, 1, size, 44))
        assert tuple(out.shape[2:]) == net.output_shape((size, 44)) == (size - 40, 4)
    with pytest.raises(InputError, match=r"pad it to \(48, 44\)"):
        net.output_shape((45, 44))


def test_valid_anisotropic_rules_per_axis():
    net = build("unet3d_aniso", depth=2, filters=2, padding="valid", norm="none").eval()
    shape = net.valid_input_shape((1, 1, 1))
    assert shape == (18, 44, 44)  # Z loses nothing at the in-plane top level
    with torch.no_grad():
        out = net(torch.randn(1, 1, *shape))
    assert tuple(out.shape[2:]) == net.output_shape(shape) == (2, 4, 4)


def test_forward_with_bad_shape_names_the_shape_to_pad_to():
    net = build("unet2d", depth=2, filters=2)
    with pytest.raises(InputError, match=r"pad it to \(20, 16\)"):
        net(torch.zeros(1, 1, 18, 16))


def test_forward_with_wrong_channels_or_dims():
    net = build("unet3d", in_channels=2, depth=1, filters=2)
    with pytest.raises(InputError, match=r"\(N, 2, Z, Y, X\)"):
        net(torch.zeros(1, 1, 4, 4, 4))
    with pytest.raises(InputError):
        net(torch.zeros(1, 2, 4, 4))


# ------------------------------------------------------------------------------ receptive field


def test_receptive_field_of_a_one_level_unet():
    # Decoder convs see 5 up-sampled voxels = 3 bottleneck voxels; bottleneck convs widen that to 7
    # pooled = 14 encoder voxels; encoder convs add 4: 18. Z of the anisotropic net: only the bottleneck
    # convolves along Z (3x3x3 twice): 5.
    assert receptive_field(build("unet2d", depth=1, filters=2)) == (18, 18)
    assert receptive_field(build("unet2d", depth=1, filters=2, padding="valid")) == (18, 18)
    assert receptive_field(build("unet3d_aniso", depth=1, filters=2)) == (5, 18, 18)


@pytest.mark.parametrize("depth", [2, 3])
def test_receptive_field_does_not_depend_on_padding_or_width(depth):
    same = receptive_field(build("unet2d", depth=depth, filters=2))
    assert same == receptive_field(build("unet2d", depth=depth, filters=2, padding="valid"))
    assert same == receptive_field(build("unet2d", depth=depth, filters=8, activation="tanh", norm="instance"))
    assert same[0] > 2**depth and not same.is_global


def test_receptive_field_leaves_the_model_untouched():
    net = build("unet2d", depth=1, filters=2).train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    receptive_field(net)
    assert net.training
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())


class _Convs(SegmentationNetwork):
    """Two 3x3 convolutions with dilation 2 and a ReLU between them: field 1 + 2*2*2 = 9."""

    def __init__(self, global_pool: bool = False) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=2, dilation=2)
        self.b = nn.Conv2d(4, 2, 3, padding=2, dilation=2)
        self.pool = nn.AdaptiveAvgPool2d(1) if global_pool else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b(torch.relu(self.a(x)))
        return y + self.pool(y) if self.pool is not None else y


def test_receptive_field_of_hand_made_networks():
    assert receptive_field(_Convs()) == (9, 9)
    rf = receptive_field(_Convs(global_pool=True), (20, 24))
    assert isinstance(rf, ReceptiveField) and rf.is_global and rf == (20, 24)


def test_summary_for_deepseg_info():
    net = build("unet2d", depth=1, filters=2, classes=3)
    info = summarize(net)
    assert info["network"] == "unet2d" and info["classes"] == 3 and info["options"]["depth"] == 1
    # by hand: encoder 3x3 convs 1->2 and 2->2 (no bias) + 2 batch norms (2 x 2 each) = 18 + 36 + 8 = 62;
    # bottleneck 2->4, 4->4 + norms = 72 + 144 + 16 = 232; up-sampling 2x2 transposed 4->2 = 32;
    # decoder 4->2, 2->2 + norms = 72 + 36 + 8 = 116; head 1x1 2->3 with bias = 9.  Total 451.
    assert info["parameters"] == parameter_count(net) == 62 + 232 + 32 + 116 + 9
    # encoder 2 + bottleneck 2 + up-sampling 1 + decoder 2 + head 1
    assert info["layers"] == layer_count(net) == 8
    assert info["receptive_field"] == [18, 18] and info["receptive_field_global"] is False
