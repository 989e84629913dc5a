"""The shared contract every registered deepseg network must fulfil, as a reusable pytest base class.

Subclass :class:`NetworkContract` in a ``test_*.py`` file, name the subclass ``Test...`` and set class
attributes; every check then runs for every option set::

    from network_contract import NetworkContract

    class TestSegNet(NetworkContract):
        name = "segnet2d"
        spatial_dims = 2
        option_sets = [dict(depth=2, filters=4), dict(depth=3, filters=2, activation="elu")]
        input_shapes = [(16, 16), (19, 23)]   # need not be accepted: each is padded first

Attributes:

* ``name`` - registry name; ``spatial_dims`` - 2 or 3.
* ``option_sets`` - list of option dicts passed to :func:`engine.networks.build` (keep them tiny:
  few filters, small widths - the whole class should run in seconds on one core).
* ``input_shapes`` - spatial shapes (``spatial_dims`` ints); each is padded to
  ``model.valid_input_shape(shape)`` before use. The first one is used for the training step,
  save/reload and receptive field checks; all of them for the output shape check. Choose them so that
  the deepest feature map keeps >= 2 voxels when the option set uses instance normalisation.
* ``in_channels`` (default 2), ``classes`` (default 3), ``batch_size`` (default 2).
* ``all_parameters_trained`` (default True): every parameter must receive a gradient in the training
  step; set False for networks with parameters that legitimately sit out (e.g. an unused auxiliary head).

Checks, per option set: the registry entry and the model agree (name, spatial_dims, options that
rebuild the same network); logits have shape ``(N, classes, *model.output_shape(shape))``; an
unaccepted shape (sizes + 1) is padded by ``valid_input_shape`` to an accepted one, and
``check_input_shape`` on it raises InputError whose message contains the padded shape as a tuple;
one Adam + cross-entropy step runs with finite gradients and changes the weights; the network saved
as a model folder (:func:`engine.model_files.save_model`) and loaded back (``load_model``, which
rebuilds it from ``config.json``) gives identical outputs in eval mode; ``receptive_field`` returns
positive ints; ``describe()["parameters"]`` equals the count computed from each layer's configuration
(channels, kernel sizes, groups, bias, affine), not from the tensors themselves.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

from engine.errors import InputError
from engine.networks import build, get_spec
from engine.networks.analysis import parameter_count, receptive_field, summarize


def _options_id(options: dict[str, Any]) -> str:
    return "-".join(f"{k}={v}" for k, v in options.items()) or "defaults"


class NetworkContract:
    """Base class of the per-architecture network tests (see the module docstring)."""

    name: ClassVar[str] = ""
    spatial_dims: ClassVar[int] = 2
    option_sets: ClassVar[list[dict[str, Any]]] = [{}]
    input_shapes: ClassVar[list[tuple[int, ...]]] = []
    in_channels: ClassVar[int] = 2
    classes: ClassVar[int] = 3
    batch_size: ClassVar[int] = 2
    all_parameters_trained: ClassVar[bool] = True

    # pytest calls this for each test method of a subclass: it fans the class attributes out.
    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "options" in metafunc.fixturenames:
            metafunc.parametrize("options", self.option_sets, ids=[_options_id(o) for o in self.option_sets])
        if "input_shape" in metafunc.fixturenames:
            metafunc.parametrize("input_shape", self.input_shapes, ids=["x".join(map(str, s)) for s in self.input_shapes])

    @pytest.fixture(autouse=True)
    def _small_and_seeded(self):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the test machines are shared; tiny nets gain nothing from threads
        torch.manual_seed(0)
        yield
        torch.set_num_threads(threads)

    # ------------------------------------------------------------------------------------ helpers
    def build(self, options: dict[str, Any]) -> nn.Module:
        return build(self.name, in_channels=self.in_channels, classes=self.classes, **options)

    def input_channels(self, model: nn.Module) -> int:
        return self.in_channels * int(getattr(model, "z_context", 1))

    def batch(self, model: nn.Module, shape: tuple[int, ...], n: int | None = None) -> torch.Tensor:
        return torch.randn(n or self.batch_size, self.input_channels(model), *shape)

    def first_shape(self, model: nn.Module) -> tuple[int, ...]:
        assert self.input_shapes, f"{type(self).__name__}.input_shapes is empty"
        return tuple(model.valid_input_shape(self.input_shapes[0]))

    # ------------------------------------------------------------------------------------- checks
    def test_registry_entry_matches_model(self, options):
        spec = get_spec(self.name)
        model = self.build(options)
        assert spec.spatial_dims == self.spatial_dims == model.spatial_dims
        assert model.name == self.name
        assert model.padding in ("same", "valid")
        assert model.in_channels == self.in_channels and model.classes == self.classes
        assert set(model.options) == set(spec.defaults())
        for key, value in options.items():
            assert model.options[key] == value

    def test_output_shape(self, options, input_shape):
        model = self.build(options).eval()
        shape = tuple(model.valid_input_shape(input_shape))
        assert len(shape) == self.spatial_dims
        assert all(s >= r for s, r in zip(shape, input_shape)), (shape, input_shape)
        with torch.no_grad():
            out = model(self.batch(model, shape, n=1))
        assert tuple(out.shape) == (1, self.classes, *model.output_shape(shape))
        assert torch.isfinite(out).all()

    def test_unaccepted_shapes_name_the_padded_shape(self, options):
        model = self.build(options)
        for requested in self.input_shapes:
            ok = tuple(model.valid_input_shape(requested))
            assert tuple(model.valid_input_shape(ok)) == ok, "valid_input_shape must be idempotent"
            model.check_input_shape(ok)
            for shape in (tuple(requested), tuple(s + 1 for s in ok)):
                padded = tuple(model.valid_input_shape(shape))
                assert all(p >= s for p, s in zip(padded, shape))
                model.check_input_shape(padded)
                if padded == shape:
                    continue
                with pytest.raises(InputError) as err:
                    model.check_input_shape(shape)
                assert str(padded) in str(err.value), f"error should name the padded shape {padded}"

    def test_training_step_changes_weights(self, options):
        model = self.build(options).train()
        shape = self.first_shape(model)
        x = self.batch(model, shape)
        target = torch.randint(0, self.classes, (self.batch_size, *model.output_shape(shape)))
        before = {k: p.detach().clone() for k, p in model.named_parameters()}
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss = nn.functional.cross_entropy(model(x), target)
        assert torch.isfinite(loss)
        loss.backward()
        for key, p in model.named_parameters():
            if p.grad is None:
                assert not self.all_parameters_trained, f"parameter {key} received no gradient"
                continue
            assert torch.isfinite(p.grad).all(), f"non-finite gradient in {key}"
        optimizer.step()
        changed = [k for k, p in model.named_parameters() if not torch.equal(before[k], p.detach())]
        assert changed, "one training step changed no weight"
        if self.all_parameters_trained:
            assert set(changed) == set(before), f"unchanged: {sorted(set(before) - set(changed))}"

    def test_model_folder_round_trip(self, options, tmp_path):
        from engine.model_files import load_model, save_model
        from engine.normalization import Normalization

        model = self.build(options)
        shape = self.first_shape(model)
        with torch.no_grad():
            model.train()(self.batch(model, shape))  # moves running statistics off their defaults
        model.eval()
        x = self.batch(model, shape, n=1)
        with torch.no_grad():
            expected = model(x)
        folder = save_model(model, tmp_path / "model", patch=shape, normalization=Normalization("none"),
                            axes="YX" if self.spatial_dims == 2 else "ZYX")
        torch.manual_seed(1)  # a fresh build must not be identical by accident
        loaded = load_model(folder, device="cpu")  # rebuilt from config.json alone
        assert loaded.network.name == self.name and loaded.network.options == model.options
        with torch.no_grad():
            assert torch.equal(loaded.network(x), expected)
            fresh = build(self.name, in_channels=self.in_channels, classes=self.classes, **model.options).eval()
            assert not torch.equal(fresh(x), expected), "the check could not tell saved from fresh weights"

    def test_receptive_field(self, options):
        model = self.build(options)
        rf = receptive_field(model, self.first_shape(model))
        assert len(rf) == self.spatial_dims
        assert all(isinstance(r, int) and r > 0 for r in rf), rf

    def test_describe_counts_parameters(self, options):
        model = self.build(options)
        count = parameters_from_layers(model)
        assert model.describe()["parameters"] == parameter_count(model) == count
        info = summarize(model)
        assert info["network"] == self.name and info["parameters"] == count
        assert info["layers"] > 0 and len(info["receptive_field"]) == self.spatial_dims


def parameters_from_layers(model: nn.Module) -> int:
    """The parameter count computed from each layer's configuration, as one would by hand."""
    total = 0
    for name, layer in model.named_modules():
        if not list(layer.parameters(recurse=False)):
            continue
        if isinstance(layer, nn.modules.conv._ConvNd):  # weight (out, in/groups, *k) or transposed (in, out/groups, *k)
            total += layer.in_channels * layer.out_channels // layer.groups * math.prod(layer.kernel_size)
            total += layer.out_channels if layer.bias is not None else 0
        elif isinstance(layer, nn.modules.batchnorm._NormBase):  # batch and instance norm
            total += 2 * layer.num_features if layer.affine else 0
        elif isinstance(layer, nn.GroupNorm):
            total += 2 * layer.num_channels if layer.affine else 0
        elif isinstance(layer, nn.LayerNorm):
            total += math.prod(layer.normalized_shape) * ((layer.weight is not None) + (layer.bias is not None))
        elif isinstance(layer, nn.Linear):
            total += layer.in_features * layer.out_features + (layer.out_features if layer.bias is not None else 0)
        elif isinstance(layer, nn.PReLU):
            total += layer.num_parameters
        else:
            raise AssertionError(f"layer {name!r} ({type(layer).__name__}) has parameters the contract cannot count")
    return total
