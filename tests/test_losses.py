"""Each loss against values computed by hand on a two-pixel example.

Logits (2 classes) at pixel a: [0, 0] -> p = [1/2, 1/2]; at pixel b: [ln 3, 0] -> p = [3/4, 1/4].
"""

import math

import pytest
import torch

from engine.errors import InputError
from engine.losses import IGNORE_INDEX, SegmentationLoss, class_weights_from_counts

LOGITS = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]])  # (N=1, K=2, 1, 2)


def loss(name, target, **kw):
    return float(SegmentationLoss(name, classes=2, **kw)(LOGITS, torch.tensor([[target]])))


def test_cross_entropy():
    # mean of -ln(1/2) and -ln(3/4)
    assert loss("ce", [0, 0]) == pytest.approx((math.log(2) + math.log(4 / 3)) / 2, abs=1e-6)


def test_cross_entropy_ignores_unlabelled():
    assert loss("ce", [0, IGNORE_INDEX]) == pytest.approx(math.log(2), abs=1e-6)


def test_cross_entropy_class_weights():
    # pixel a truth 0 (-ln 1/2, weight 1), pixel b truth 1 (-ln 1/4, weight 3): weighted mean
    expected = (1 * math.log(2) + 3 * math.log(4)) / 4
    assert loss("ce", [0, 1], weights=[1.0, 3.0]) == pytest.approx(expected, abs=1e-6)


def test_focal():
    # alpha (1 - p_t)^gamma (-ln p_t) with alpha 0.25, gamma 2, averaged over the two pixels
    a = 0.25 * 0.5**2 * math.log(2)
    b = 0.25 * 0.25**2 * math.log(4 / 3)
    assert loss("focal", [0, 0]) == pytest.approx((a + b) / 2, abs=1e-6)
    assert loss("focal", [0, IGNORE_INDEX]) == pytest.approx(a, abs=1e-6)


def test_dice():
    # class 0: 2 * (1/2 + 3/4) / ((1/2 + 3/4) + 2) = 10/13; class 1: 0 / (1/2 + 1/4) = 0
    assert loss("dice", [0, 0]) == pytest.approx(1 - (10 / 13) / 2, abs=1e-4)
    # excluding background leaves only class 1, whose Dice is 0
    assert loss("dice", [0, 0], exclude_background=True) == pytest.approx(1.0, abs=1e-4)


def test_dice_ignores_unlabelled():
    # only pixel a counts: class 0: 2 * 1/2 / (1/2 + 1) = 2/3; class 1: 0
    assert loss("dice", [0, IGNORE_INDEX]) == pytest.approx(1 - (2 / 3) / 2, abs=1e-4)


def test_generalized_dice():
    # weights 1/count^2: class 0 counted twice -> 1/4, class 1 absent -> 0; result 1 - 10/13
    assert loss("generalized_dice", [0, 0]) == pytest.approx(1 - 10 / 13, abs=1e-4)


def test_ce_dice_is_the_sum():
    assert loss("ce_dice", [0, 1]) == pytest.approx(loss("ce", [0, 1]) + loss("dice", [0, 1]), abs=1e-6)


def test_all_ignored_gives_zero_and_gradients():
    logits = LOGITS.clone().requires_grad_(True)
    for name in ("ce", "focal", "dice", "generalized_dice", "ce_dice"):
        value = SegmentationLoss(name, classes=2)(logits, torch.full((1, 1, 2), IGNORE_INDEX))
        value.backward()
        assert torch.isfinite(value)


def test_bad_options():
    with pytest.raises(InputError, match="loss 'hinge'"):
        SegmentationLoss("hinge", classes=2)
    with pytest.raises(InputError, match="3 class weights given for 2 classes"):
        SegmentationLoss("ce", classes=2, weights=[1, 2, 3])


def test_class_weights_from_counts():
    # frequencies 0.75 / 0.25, median 0.5 -> weights 2/3 and 2; an absent class gets 0
    assert class_weights_from_counts([75, 25, 0]) == pytest.approx([2 / 3, 2.0, 0.0])
    with pytest.raises(InputError):
        class_weights_from_counts([0, 0])


@pytest.mark.parametrize("name", ["ce", "focal", "dice", "generalized_dice", "ce_dice"])
def test_ignored_voxels_do_not_affect_loss_or_gradient(name):
    """Logits where the target is IGNORE_INDEX (unlabelled or masked out) change neither the loss nor
    the gradient anywhere, and receive no gradient themselves; the labelled voxels do matter."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=generator)
    target = torch.randint(0, 3, (2, 4, 5), generator=generator)
    ignored = torch.rand(2, 4, 5, generator=generator) < 0.5
    target[ignored] = IGNORE_INDEX
    fn = SegmentationLoss(name, classes=3, weights=[1.0, 2.0, 0.5] if name != "generalized_dice" else None)

    def loss_and_grad(values):
        values = values.clone().requires_grad_(True)
        value = fn(values, target)
        value.backward()
        return value.detach(), values.grad

    base, grad = loss_and_grad(logits)
    changed = logits.clone()
    changed[ignored.unsqueeze(1).expand_as(logits)] = 50.0 * torch.randn(int(ignored.sum()) * 3, generator=generator)
    other, other_grad = loss_and_grad(changed)
    assert torch.equal(other, base)
    torch.testing.assert_close(other_grad, grad, rtol=0, atol=0)
    assert (grad.movedim(1, -1)[ignored] == 0).all()
    labelled = logits + (~ignored).unsqueeze(1) * torch.tensor([0.0, 1.0, 2.0]).view(1, 3, 1, 1)
    assert not torch.equal(loss_and_grad(labelled)[0], base)  # control: labelled voxels count
