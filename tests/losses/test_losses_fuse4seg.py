from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fuse4seg.losses import (
    DiceCELoss,
    correlation_coefficient,
    decomposition_loss,
    gradient_loss,
    reconstruction_loss,
    region_dice_loss,
    soft_dice_loss,
)


def test_soft_dice_hand_example_background_excluded():
    # 1 sample, 2 classes, 4 pixels; class-1 probabilities and target
    p1 = torch.tensor([0.2, 0.8, 0.6, 0.0])
    probs = torch.stack([1 - p1, p1]).reshape(1, 2, 2, 2)
    target = torch.tensor([0, 1, 1, 0]).reshape(1, 2, 2)
    # inter = 1.4, sum p = 1.6, sum y = 2 -> dice = 2.8 / 3.6
    loss = soft_dice_loss(probs, target, eps=0.0)
    assert loss.item() == pytest.approx(1 - 2.8 / 3.6, abs=1e-6)
    # with background: class 0 inter = 0.8 + 1.0 = 1.8, sum p = 2.4, sum y = 2 -> 3.6/4.4
    loss_bg = soft_dice_loss(probs, target, include_background=True, eps=0.0)
    assert loss_bg.item() == pytest.approx(1 - (2.8 / 3.6 + 3.6 / 4.4) / 2, abs=1e-6)


def test_soft_dice_class_weights_are_rescaled():
    probs = torch.tensor([[0.5, 0.2, 0.3], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]).T.reshape(1, 3, 3)
    target = torch.tensor([[0, 1, 2]])
    onehot = F.one_hot(target, 3).movedim(-1, 1).float()
    d = (2 * (probs * onehot).sum((0, 2))) / (probs.sum((0, 2)) + onehot.sum((0, 2)))
    w = torch.tensor([1.0, 3.0, 1.0])
    expected = 1 - (1.5 * d[1] + 0.5 * d[2]) / 2  # weights 3, 1 rescaled to mean 1
    got = soft_dice_loss(probs, target, class_weights=w, eps=0.0)
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)


def test_dicece_combines_terms_and_perfect_prediction():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6)
    target = torch.randint(0, 4, (2, 5, 6))
    w = [0.5, 1.0, 2.0, 3.0]
    loss = DiceCELoss(class_weights=w, dice_weight=0.7, ce_weight=1.3)(logits, target)
    wt = torch.tensor(w)
    ce = F.cross_entropy(logits, target, weight=wt)
    dice = soft_dice_loss(logits.softmax(1), target, class_weights=wt)
    assert loss.item() == pytest.approx((0.7 * dice + 1.3 * ce).item(), rel=1e-5)
    perfect = F.one_hot(target, 4).movedim(-1, 1).float() * 40.0
    assert DiceCELoss()(perfect, target).item() < 1e-4
    # 3D input works too
    vol = torch.randn(1, 4, 3, 4, 5, requires_grad=True)
    DiceCELoss()(vol, torch.randint(0, 4, (1, 3, 4, 5))).backward()
    assert torch.isfinite(vol.grad).all()


def test_dicece_errors():
    with pytest.raises(ValueError, match="entries"):
        DiceCELoss(num_classes=4, class_weights=[1, 2])
    with pytest.raises(ValueError, match="logits"):
        DiceCELoss(num_classes=4)(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="target"):
        DiceCELoss()(torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))


def test_correlation_coefficient_hand_values():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    assert correlation_coefficient(a, 2 * a + 1).item() == pytest.approx(1.0, abs=1e-6)
    assert correlation_coefficient(a, -a).item() == pytest.approx(-1.0, abs=1e-6)
    b = torch.tensor([1.0, -1.0, -1.0, 1.0]).reshape(1, 1, 2, 2)  # orthogonal to centred a
    assert correlation_coefficient(a, b).item() == pytest.approx(0.0, abs=1e-6)
    # per-(sample, channel) average: channels with cc 1 and -1 average to 0
    two = torch.cat([a, a], dim=1)
    assert correlation_coefficient(two, torch.cat([a, -a], dim=1)).item() == pytest.approx(0.0)


def test_decomposition_loss_hand_values():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    b = torch.tensor([1.0, -1.0, -1.0, 1.0]).reshape(1, 1, 2, 2)
    low = torch.stack([a, a], dim=1)  # (1, 2, 1, 2, 2): cc_low = 1
    high = torch.stack([a, -a], dim=1)  # cc_high = -1
    assert decomposition_loss(low, high).item() == pytest.approx(1 / 2.01, rel=1e-5)
    high_orth = torch.stack([a, b], dim=1)
    assert decomposition_loss(low, high_orth).item() == pytest.approx(0.0, abs=1e-10)
    # M = 3: pairs (0,1): hi cc -1, lo cc 1 -> 1/2.01; (0,2): hi 1, lo -1 -> 1/0.01;
    # (1,2): hi -1, lo -1 -> 1/0.01
    low3 = torch.stack([a, a, -a], dim=1)
    high3 = torch.stack([a, -a, a], dim=1)
    expected = (1 / 2.01 + 1 / 0.01 + 1 / 0.01) / 3
    assert decomposition_loss(low3, high3).item() == pytest.approx(expected, rel=1e-4)
    # M = 1: no pair -> 0 and still differentiable
    one = torch.rand(2, 1, 3, 4, 4, requires_grad=True)
    out = decomposition_loss(one, one)
    out.backward()
    assert out.item() == 0.0 and one.grad is not None
    with pytest.raises(ValueError, match="share"):
        decomposition_loss(torch.zeros(1, 2, 1, 2, 2), torch.zeros(1, 3, 1, 2, 2))


def test_gradient_loss_hand_value_2d_and_3d():
    w = 5
    ramp = 0.5 * torch.arange(w, dtype=torch.float32).expand(4, w)
    sources = torch.stack([ramp, torch.zeros(4, w)]).unsqueeze(0)  # (1, 2, 4, 5)
    fused = torch.zeros(1, 1, 4, w)
    # |Sobel| of the ramp per column: [a/2, a, a, a, a/2] -> mean 0.8 a
    assert gradient_loss(fused, sources, norm="l1").item() == pytest.approx(0.8 * 0.5)
    # fused equal to the sharpest source -> 0
    assert gradient_loss(sources[:, :1], sources).item() == pytest.approx(0.0, abs=1e-5)
    vol_src = torch.rand(1, 3, 4, 6, 6)
    assert gradient_loss(vol_src[:, 1:2], vol_src).item() >= 0
    best = vol_src[:, :1] * 0  # zero fused: loss = mean of max magnitude
    from fuse4seg.losses import sobel_magnitude

    expected = sobel_magnitude(vol_src, norm="l1").amax(1).mean()
    assert gradient_loss(best, vol_src, norm="l1").item() == pytest.approx(
        expected.item(), rel=1e-5
    )
    with pytest.raises(ValueError, match="fused"):
        gradient_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))


def test_reconstruction_loss_hand_value():
    sources = torch.stack([torch.full((3, 3), 0.2), torch.full((3, 3), 0.4)]).unsqueeze(0)
    fused = torch.full((1, 1, 3, 3), 0.5)
    assert reconstruction_loss(fused, sources).item() == pytest.approx(0.04, rel=1e-5)
    assert reconstruction_loss(sources.mean(1, keepdim=True), sources).item() == 0.0
    with pytest.raises(ValueError, match="differ"):
        reconstruction_loss(torch.zeros(1, 1, 3, 3), torch.zeros(1, 2, 3, 4))


def test_correlation_has_finite_gradients_for_a_constant_channel():
    a = torch.rand(2, 3, 8, 8)
    a[:, 1] = 0.5  # a flat feature map (seen in training: NaN leader weights)
    a.requires_grad_(True)
    b = torch.rand(2, 3, 8, 8, requires_grad=True)
    correlation_coefficient(a, b).backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_information_loss_values_and_shape_check():
    from fuse4seg.losses import information_loss

    x = torch.rand(2, 2, 5, 5)
    assert information_loss(x, x).item() == 0.0
    assert information_loss(x + 0.5, x).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="differ in shape"):
        information_loss(x[:, :1], x)


def test_rarity_weights_favour_rare_source_combinations():
    from fuse4seg.losses import information_loss, rarity_weights

    x = torch.zeros(1, 2, 10, 10)
    x[0, 1, :2, :2] = 1.0  # 4 of 100 pixels: bright in source 1 only
    w = rarity_weights(x)
    assert w.shape == (1, 1, 10, 10)
    assert float(w.mean()) == pytest.approx(1.0, rel=1e-6)
    # p = 0.04 vs 0.96: weights in the ratio sqrt(0.96 / 0.04)
    assert float(w[0, 0, 0, 0] / w[0, 0, 9, 9]) == pytest.approx((0.96 / 0.04) ** 0.5, rel=1e-5)
    flat = torch.full((2, 3, 8, 8), 0.3)
    assert torch.allclose(rarity_weights(flat), torch.ones(2, 1, 8, 8))
    # the weighted loss counts an error on the rare pixels more
    err = torch.zeros_like(x)
    err[0, 1, :2, :2] = 0.5
    assert float(information_loss(x + err, x, w)) > float(information_loss(x + err, x))
    with pytest.raises(ValueError, match="bins"):
        rarity_weights(x, bins=1)


def test_class_separation_loss_hand_values_region_and_errors():
    from fuse4seg.losses import class_separation_loss

    y = torch.zeros(1, 4, 4, dtype=torch.long)
    y[0, :2] = 1  # 8 pixels of class 1, 8 of class 0
    f = torch.zeros(1, 1, 4, 4)
    f[0, 0, :2, :2] = 1.0  # class 1: four 1s, four 0s: mean 0.5, var 0.25; class 0: 0, 0
    # d = 0.25 / (0.25 + 0 + 1e-4): loss 1 / (1 + d)
    d = 0.25 / (0.25 + 1e-4)
    assert float(class_separation_loss(f, y)) == pytest.approx(1.0 / (1.0 + d), rel=1e-6)
    # equal class means: total overlap
    assert float(class_separation_loss(torch.zeros(1, 1, 4, 4), y)) == pytest.approx(1.0)
    # well apart: near 0
    far = (y > 0).float().unsqueeze(1)
    assert float(class_separation_loss(far, y)) < 1e-3
    # class 0 counts inside the region only: outside pixels of value 5 are ignored
    f2 = far.clone()
    f2[0, 0, 3, 3] = 5.0
    region = torch.ones(1, 4, 4, dtype=torch.bool)
    region[0, 3, 3] = False
    assert float(class_separation_loss(f2, y, region)) < 1e-3
    assert float(class_separation_loss(f2, y)) > 0.01
    # a class with fewer than min_pixels pixels is left out; a single class gives 0 with a graph
    assert float(class_separation_loss(f, y, min_pixels=9)) == 0.0
    g = torch.rand(1, 1, 4, 4, requires_grad=True)
    loss = class_separation_loss(g, torch.zeros(1, 4, 4, dtype=torch.long))
    loss.backward()
    assert float(loss) == 0.0 and g.grad is not None
    with pytest.raises(ValueError, match="differ in size"):
        class_separation_loss(f, y[:, :3])
    with pytest.raises(ValueError, match="must be"):
        class_separation_loss(f[:, 0], y)


def test_class_separation_gradient_pushes_class_means_apart():
    from fuse4seg.losses import class_separation_loss

    g = torch.Generator().manual_seed(0)
    y = torch.zeros(2, 8, 8, dtype=torch.long)
    y[:, 2:5, 2:5] = 2
    f = (0.5 + 0.05 * torch.rand(2, 1, 8, 8, generator=g)).requires_grad_()
    class_separation_loss(f, y).backward()
    inside = (y == 2).unsqueeze(1)
    # gradient descent moves the two classes in opposite directions
    assert float(f.grad[inside].sum()) * float(f.grad[~inside].sum()) < 0


def test_class_contrasts_hand_values_and_affine_invariance():
    from fuse4seg.losses import class_contrasts

    y = torch.zeros(1, 4, 4, dtype=torch.long)
    y[0, 0] = 1  # 4 pixels of class 1, 12 of class 0
    img = torch.zeros(1, 1, 4, 4)
    img[0, 0, 0] = 3.0
    img[0, 0, 1:, :2] = 1.0  # healthy: six 1s, six 0s: mean 0.5, sd 0.5
    region = torch.ones(1, 4, 4, dtype=torch.bool)
    k, valid = class_contrasts(img, y, region, min_pixels=4)
    assert float(k[0, 0]) == pytest.approx(2.5 / math.sqrt(0.25 + 1e-6), rel=1e-6)
    assert bool(valid[0, 0])
    k2, _ = class_contrasts(5.0 * img - 2.0, y, region, min_pixels=4)
    assert float(k2[0, 0]) == pytest.approx(float(k[0, 0]), rel=1e-5)
    # healthy tissue counts inside the region only: row 3 (two 1s, two 0s) left out
    region[0, 3] = False
    img2 = img.clone()
    img2[0, 0, 3] = 9.0
    k3, _ = class_contrasts(img2, y, region, min_pixels=4)
    assert float(k3[0, 0]) == pytest.approx(2.5 / math.sqrt(0.25 + 1e-6), rel=1e-5)
    _, few = class_contrasts(img, y, region, min_pixels=5)
    assert not bool(few.any())


def test_contrast_floor_is_one_sided_and_pushes_a_flattened_class_back():
    from fuse4seg.losses import contrast_floor_loss

    torch.manual_seed(0)
    y = torch.zeros(2, 16, 16, dtype=torch.long)
    y[:, 4:8, 4:8] = 2
    y[:, 10:13, 10:13] = 3
    brain = torch.ones(2, 16, 16, dtype=torch.bool)
    ref = torch.rand(2, 1, 16, 16) * 0.2 + 0.3
    ref[:, 0][y == 2] += 0.3
    ref[:, 0][y == 3] += 0.5
    assert float(contrast_floor_loss(ref, ref, y, brain)) == 0.0
    # more contrast than the reference, or any positive affine copy: no loss
    stronger = ref.clone()
    stronger[:, 0][y == 2] += 0.4
    assert float(contrast_floor_loss(stronger, ref, y, brain)) == 0.0
    scaled = 3.0 * ref + 1.0
    assert float(contrast_floor_loss(scaled, ref, y, brain)) == pytest.approx(0.0, abs=1e-5)
    # class 2 flattened into healthy tissue: a loss, whose gradient brightens class 2
    flat = ref.clone()
    flat[:, 0][y == 2] -= 0.3
    flat.requires_grad_(True)
    loss = contrast_floor_loss(flat, ref, y, brain)
    loss.backward()
    assert float(loss) > 0.1
    assert float(flat.grad[:, 0][y == 2].mean()) < 0.0
    # no valid class (one class only): 0 with a graph
    g = torch.rand(1, 1, 4, 4, requires_grad=True)
    out = contrast_floor_loss(g, g.detach(), torch.zeros(1, 4, 4, dtype=torch.long),
                              torch.ones(1, 4, 4, dtype=torch.bool))  # fmt: skip
    out.backward()
    assert float(out) == 0.0 and g.grad is not None
    with pytest.raises(ValueError, match="must be"):
        contrast_floor_loss(flat[:, 0], ref[:, 0], y, brain)
    with pytest.raises(ValueError, match="differ in size"):
        contrast_floor_loss(flat, ref, y[:, :8], brain)


def test_pooled_contrast_falls_when_the_class_spreads_out():
    from fuse4seg.losses import class_contrasts, contrast_floor_loss

    torch.manual_seed(1)
    y = torch.zeros(1, 16, 16, dtype=torch.long)
    y[0, 4:10, 4:10] = 2
    brain = torch.ones(1, 16, 16, dtype=torch.bool)
    ref = torch.rand(1, 1, 16, 16) * 0.1 + 0.3
    ref[0, 0][y[0] == 2] += 0.3
    wide = ref.clone()
    noise = torch.linspace(-0.2, 0.2, 36).reshape(6, 6)
    wide[0, 0, 4:10, 4:10] += noise  # same class mean, larger spread inside the class
    k_ref, _ = class_contrasts(ref, y, brain, spread="healthy")
    k_wide, _ = class_contrasts(wide, y, brain, spread="healthy")
    assert float(k_wide[0, 1]) == pytest.approx(float(k_ref[0, 1]), rel=1e-4)
    d_ref, _ = class_contrasts(ref, y, brain, spread="pooled")
    d_wide, _ = class_contrasts(wide, y, brain, spread="pooled")
    assert float(d_wide[0, 1]) < 0.7 * float(d_ref[0, 1])
    # pooled: hand value with constant classes of known variance
    img = torch.zeros(1, 1, 4, 4)
    lab = torch.zeros(1, 4, 4, dtype=torch.long)
    lab[0, :2] = 1
    img[0, 0, :2] = torch.tensor([[2.0, 4.0, 2.0, 4.0], [2.0, 4.0, 2.0, 4.0]])  # mean 3, var 1
    img[0, 0, 2:] = torch.tensor([[0.0, 2.0, 0.0, 2.0], [0.0, 2.0, 0.0, 2.0]])  # mean 1, var 1
    d, _ = class_contrasts(img, lab, torch.ones(1, 4, 4, dtype=torch.bool), spread="pooled")
    assert float(d[0, 0]) == pytest.approx(2.0 / math.sqrt(1.0 + 1e-6), rel=1e-5)
    assert float(contrast_floor_loss(ref, ref, y, brain, spread="pooled")) == 0.0
    assert float(contrast_floor_loss(wide, ref, y, brain, spread="pooled")) > 0.0
    assert float(contrast_floor_loss(wide, ref, y, brain, spread="healthy")) < 1e-3
    with pytest.raises(ValueError, match="spread must be one of"):
        class_contrasts(ref, y, brain, spread="brain")


def test_region_dice_hand_values_and_dicece_regions():
    # 1 x 4 pixels: labels bg, NCR, ED, ET; hard probabilities that call the ED pixel NCR
    y = torch.tensor([[0, 1, 2, 3]])
    probs = F.one_hot(torch.tensor([[0, 1, 1, 3]]), 4).movedim(-1, 1).float()
    # WT {1,2,3}: perfect; TC {1,3}: p = [0,1,1,1], t = [0,1,0,1] -> 2*2/(3+2) = 0.8; ET: 1
    expected = 1.0 - (1.0 + 0.8 + 1.0) / 3.0
    assert float(region_dice_loss(probs, y, eps=0.0)) == pytest.approx(expected, abs=1e-7)
    # custom regions; a region with a class outside [0, C) is refused
    assert float(region_dice_loss(probs, y, regions=[(2,)], eps=0.0)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="region"):
        region_dice_loss(probs, y, regions=[(4,)])
    # DiceCELoss: the Dice term changes with dice_over, the CE term does not
    logits = torch.randn(2, 4, 5, 5)
    target = torch.randint(0, 4, (2, 5, 5))
    ce_only = DiceCELoss(dice_weight=0.0)(logits, target)
    regions = DiceCELoss(dice_over="regions", dice_weight=0.0, class_weights=[1, 2, 1, 2])
    assert torch.allclose(regions(logits, target), DiceCELoss(dice_weight=0.0,
                          class_weights=[1, 2, 1, 2])(logits, target))  # fmt: skip
    dice_r = DiceCELoss(dice_over="regions", ce_weight=0.0)(logits, target)
    ref = region_dice_loss(logits.softmax(dim=1), target)
    assert torch.allclose(dice_r, ref) and float(ce_only) > 0
    dice_c = DiceCELoss(ce_weight=0.0)(logits, target)
    dice_b = DiceCELoss(dice_over="both", ce_weight=0.0)(logits, target)
    assert torch.allclose(dice_b, (dice_c + dice_r) / 2)
    with pytest.raises(ValueError, match="dice_over"):
        DiceCELoss(dice_over="voxels")
    with pytest.raises(ValueError, match="4 BraTS classes"):
        DiceCELoss(num_classes=3, dice_over="regions")
