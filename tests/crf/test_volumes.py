"""Mean field beyond RGB photos: 3-D volumes, 1-D signals, grayscale and many-channel guides.

The ladder as for photos: the exact CRF in N-D against a dense float64 computation written out here (positions
× spacing / θ per axis, channels / θ per channel); the lattice CRF against the exact one (measured bounds);
the slice identity (a volume whose slices are decoupled by a tiny θ, or a huge spacing, along the stacking axis
is a stack of independent 2-D problems); the 2-D RGB case unchanged bit for bit; gradients (gradcheck in
float64 on a tiny volume); which compiled path runs; the memory refusal before anything is allocated.
"""

import dataclasses

import pytest
import torch

import lab
import lab.crf as crf
import lab.lattice.limits as limits_module
from lab.crf import CRFRNN, CRFKernels, CRFParams, mean_field
from lab.crf.mean_field import _cpu_fused

SHAPE_3D = (6, 8, 10)  # (D, H, W): 480 voxels, deliberately unequal sides
# Lattice CRF against the exact CRF on the volumes below (3 labels, w = (4, 2), T = 5, float64, θα = (1.5, 3, 3)
# mm with spacing (2, 1, 1), θγ = (1, 1.5, 1.5), θβ = 20 (C = 1) or 10..40 per channel (C = 7); the CRF changes
# 5–8 % of the labels), measured 2026-12-02 over C = 1 / 7, 3-D (6×8×10) and 2-D (12×14), "after" and
# "symmetric": argmax agreement ≥ 0.964 (C = 7, 2-D; C = 1: ≥ 0.996), mean |ΔQ| ≤ 0.0202 (C = 1: ≤ 0.0023).
# One message from Q₀, relative L2 of the label differences (bilateral, spatial): C = 1 (d = 3, 4) ≤ 0.048 /
# 0.048; C = 7 (d = 9, 10) ≤ 0.189 / 0.047 — the lattice's error grows with d, as docs/lattice.md measures.
LATTICE_MIN_AGREEMENT = 0.95
LATTICE_MAX_MEAN_DQ = 0.03
LATTICE_MESSAGE_REL_ERR = {1: (0.07, 0.07), 7: (0.25, 0.07)}
# The exact CRF against the dense computation below: the same float64 sums in another order (N = 480, d ≤ 10).
DENSE_ATOL = 1e-10
# The slice identity in the exact CRF: slices 1 apart along z at θ_z = 1e-3 (or spacing 1e4) interact through
# exp(−(1000)²/2) = 0 in float64: equal to rounding.
SLICE_ATOL = 1e-12


def volume(channels=1, shape=SHAPE_3D, labels=2, seed=0):
    """(unary (1, L, *shape), guide (1, C, *shape)) float64: an ellipsoid (60) in a background (−40), HU-like.

    Channel c is the same anatomy at its own scale (0.5 … 2) with its own noise (σ = 15 · scale); the unary is
    a noisy threshold of channel 0, spread over L labels.
    """
    g = torch.Generator().manual_seed(seed)
    n = len(shape)
    axes = torch.meshgrid(*(torch.arange(s, dtype=torch.float64) for s in shape), indexing="ij")
    inside = sum(((a - (s - 1) / 2) / (s / 2)) ** 2 for a, s in zip(axes, shape, strict=True)) < 0.6
    base = torch.where(inside, 60.0, -40.0).to(torch.float64)
    scale = channel_scales(channels).view(1, channels, *[1] * n)
    guide = (base + 15 * torch.randn(1, channels, *shape, generator=g, dtype=torch.float64)) * scale
    noise = 0.8 * torch.randn(1, 1, *shape, generator=g, dtype=torch.float64)
    logit = (guide[:, :1] / scale[:, :1] - 10) / 30 + noise
    unary = logit * torch.linspace(-1, 1, labels, dtype=torch.float64).view(1, labels, *[1] * n)
    return unary, guide


def channel_scales(channels):
    return (
        torch.linspace(0.5, 2.0, channels, dtype=torch.float64) if channels > 1 else torch.ones(1, dtype=torch.float64)
    )


def volume_params(channels, spatial_axes=3, **kw):
    """θα, θγ per axis (in mm for 3-D, spacing (2, 1, 1)); θβ per channel, in proportion to the channel's scale."""
    theta_beta = tuple(20.0 * s for s in channel_scales(channels).tolist()) if channels > 1 else 20.0
    if spatial_axes == 3:
        base = dict(theta_alpha=(1.5, 3.0, 3.0), theta_gamma=(1.0, 1.5, 1.5), spacing=(2.0, 1.0, 1.0))
    else:
        base = dict(theta_alpha=(3.0, 3.0)[:spatial_axes], theta_gamma=1.5)
    base.update(theta_beta=theta_beta, w_bilateral=4.0, w_spatial=2.0)
    base.update(kw)
    return CRFParams(**base)


def dense_mean_field(unary, guide, p, iterations):
    """Mean field with Potts and "after", the kernels as dense (N, N) float64 matrices from first principles."""
    _, num_labels, *shape = unary.shape
    n = len(shape)
    spacing = p.spacing or (1.0,) * n
    idx = torch.meshgrid(*(torch.arange(s, dtype=torch.float64) for s in shape), indexing="ij")
    pos = torch.stack([a.reshape(-1) * spacing[k] for k, a in enumerate(idx)], 1)  # (N, n), axis order

    def per(theta, count):
        t = torch.as_tensor(theta, dtype=torch.float64)
        return t.expand(count) if t.dim() == 0 else t

    values = guide[0].reshape(guide.shape[1], -1).T  # (N, C)
    f_bil = torch.cat([pos / per(p.theta_alpha, n), values / per(p.theta_beta, values.shape[1])], 1)
    f_spa = pos / per(p.theta_gamma, n)
    kernels = [torch.exp(-0.5 * (f[:, None] - f[None]).square().sum(-1)) for f in (f_bil, f_spa)]
    u = unary[0].reshape(num_labels, -1).T  # (N, L)
    q = torch.softmax(u, 1)
    for _ in range(iterations):
        checked = sum(
            w * (k @ q) / k.sum(1, keepdim=True) for w, k in zip((p.w_bilateral, p.w_spatial), kernels, strict=True)
        )
        q = torch.softmax(u - (checked.sum(1, keepdim=True) - checked), 1)  # Potts: µ Q̌ = Σ Q̌ − Q̌
    return q.T.reshape(1, num_labels, *shape)


class TestExactInND:
    @pytest.mark.parametrize(
        ("channels", "shape"),
        [(1, SHAPE_3D), (7, SHAPE_3D), (1, (12, 14)), (7, (5, 9)), (2, (17,))],  # 3-D, 2-D, 1-D signals
    )
    def test_exact_crf_equals_the_dense_computation(self, channels, shape):
        unary, guide = volume(channels, shape, labels=3)
        p = volume_params(channels, len(shape), normalize="after")
        got = mean_field(unary, guide, p, 3, message_passing="exact").q
        torch.testing.assert_close(got, dense_mean_field(unary, guide, p, 3), atol=DENSE_ATOL, rtol=0)

    def test_the_axes_are_not_interchangeable(self):
        """θα per axis pairs with the right axis: swapping θ_z and θ_x changes Q (the dense test is not blind)."""
        unary, guide = volume(1, SHAPE_3D)
        p = volume_params(1, theta_alpha=(1.0, 3.0, 6.0), spacing=None)
        swapped = dataclasses.replace(p, theta_alpha=(6.0, 3.0, 1.0))
        a = mean_field(unary, guide, p, 3, message_passing="exact").q
        b = mean_field(unary, guide, swapped, 3, message_passing="exact").q
        assert (a - b).abs().max() > 1e-3


class TestLatticeAgainstExact:
    @pytest.mark.parametrize(("channels", "shape"), [(1, SHAPE_3D), (7, SHAPE_3D), (1, (12, 14)), (7, (12, 14))])
    @pytest.mark.parametrize("normalize", ["after", "symmetric"])
    def test_lattice_crf_close_to_exact_crf(self, channels, shape, normalize):
        unary, guide = volume(channels, shape, labels=3)
        p = volume_params(channels, len(shape), normalize=normalize)
        exact = mean_field(unary, guide, p, 5, message_passing="exact")
        lattice = mean_field(unary, guide, p, 5, message_passing="lattice")
        agreement = (exact.q.argmax(1) == lattice.q.argmax(1)).double().mean().item()
        mean_dq = (exact.q - lattice.q).abs().mean().item()
        assert agreement >= LATTICE_MIN_AGREEMENT, agreement
        assert mean_dq <= LATTICE_MAX_MEAN_DQ, mean_dq
        q0 = exact.history[0]
        for m_exact, m_lattice, bound in zip(
            crf.message_passing(q0, exact.kernels),
            crf.message_passing(q0, lattice.kernels),
            LATTICE_MESSAGE_REL_ERR[channels],
            strict=True,
        ):
            e = m_exact - m_exact.mean(1, keepdim=True)  # label differences decide mean field
            err = ((m_lattice - m_lattice.mean(1, keepdim=True) - e).norm() / e.norm()).item()
            assert err <= bound, err


class TestSliceIdentity:
    """A volume whose slices cannot see each other is a stack of independent 2-D problems."""

    @staticmethod
    def slices(unary, guide, p2, message_passing):
        return torch.stack(
            [mean_field(unary[:, :, k], guide[:, :, k], p2, 4, message_passing=message_passing).q for k in range(3)],
            2,
        )

    @pytest.mark.parametrize("decouple", ["tiny theta", "huge spacing"])
    @pytest.mark.parametrize("channels", [1, 7])
    def test_exact(self, decouple, channels):
        unary, guide = volume(channels, (3, 8, 10))
        p2 = volume_params(channels, 2, theta_alpha=(3.0, 4.0), theta_gamma=(1.0, 2.0))
        if decouple == "tiny theta":
            p3 = dataclasses.replace(p2, theta_alpha=(1e-3, 3.0, 4.0), theta_gamma=(1e-3, 1.0, 2.0))
        else:
            p3 = dataclasses.replace(p2, theta_alpha=(2.0, 3.0, 4.0), theta_gamma=(2.0, 1.0, 2.0), spacing=(1e4, 1, 1))
        got = mean_field(unary, guide, p3, 4, message_passing="exact").q
        torch.testing.assert_close(got, self.slices(unary, guide, p2, "exact"), atol=SLICE_ATOL, rtol=0)

    @pytest.mark.parametrize("channels", [1, 7])
    def test_lattice(self, channels):
        """The 3-D lattice (d = 3 + C) and the 2-D one (d = 2 + C) approximate the same sums differently."""
        unary, guide = volume(channels, (3, 8, 10))
        p2 = volume_params(channels, 2, theta_alpha=(3.0, 4.0), theta_gamma=(1.0, 2.0))
        p3 = dataclasses.replace(p2, theta_alpha=(1e-3, 3.0, 4.0), theta_gamma=(1e-3, 1.0, 2.0))
        got = mean_field(unary, guide, p3, 4).q
        want = self.slices(unary, guide, p2, "lattice")
        agreement = (got.argmax(1) == want.argmax(1)).double().mean().item()
        assert agreement >= SLICE_LATTICE_MIN_AGREEMENT and (got - want).abs().mean() <= SLICE_LATTICE_MEAN_DQ


# The 3-D lattice with θ_z = 1e-3 against the 2-D lattice per slice (3 × 8 × 10, T = 4): measured 2026-12-02
# argmax agreement 0.996 (C = 1 and 7), mean |ΔQ| 0.00076 (C = 1) and 0.0028 (C = 7); two lattices of different
# dimension, each within its own error of the exact sums (which equal to rounding: test_exact).
SLICE_LATTICE_MIN_AGREEMENT = 0.98
SLICE_LATTICE_MEAN_DQ = 0.006


class TestPhotosUnchanged:
    """The 2-D RGB case is one instance of the N-D code: the same features and Q, bit for bit."""

    def test_features_are_the_formula_of_before(self):
        image = (torch.rand(2, 3, 9, 13, generator=torch.Generator().manual_seed(0)) * 255).round().to(torch.uint8)
        y, x = torch.meshgrid(
            torch.arange(9.0, dtype=torch.float64), torch.arange(13.0, dtype=torch.float64), indexing="ij"
        )
        grid = torch.stack([x, y]).expand(2, 2, 9, 13)
        want = torch.cat([(grid / 80.0).float(), (image.double() / 13.0).float()], 1)  # the pre-N-D code
        assert torch.equal(lab.bilateral_features(image, 80.0, 13.0), want)
        assert torch.equal(lab.spatial_features(image, theta_gamma=3.0), (grid / 3.0).float())

    @pytest.mark.parametrize("message_passing", ["lattice", "exact"])
    def test_per_axis_tuples_and_unit_spacing_change_nothing(self, message_passing):
        image = (torch.rand(1, 3, 10, 12, generator=torch.Generator().manual_seed(1)) * 255).round()
        unary = torch.randn(1, 3, 10, 12, generator=torch.Generator().manual_seed(2))
        p = CRFParams(theta_alpha=8.0, theta_beta=13.0, theta_gamma=3.0, normalize="symmetric")
        q = mean_field(unary, image, p, 3, message_passing=message_passing).q
        for same in (
            dataclasses.replace(p, theta_alpha=(8.0, 8.0), theta_beta=(13.0,) * 3, theta_gamma=(3.0, 3.0)),
            dataclasses.replace(p, spacing=(1.0, 1.0)),
            dataclasses.replace(p, theta_alpha=torch.tensor([8.0, 8.0]), theta_beta=torch.tensor([13.0] * 3)),
        ):
            assert torch.equal(mean_field(unary, image, same, 3, message_passing=message_passing).q, q)


class TestPaths:
    """Every inference path works on point layout; the compiled CPU iteration runs in N-D too."""

    @pytest.mark.parametrize("channels", [1, 7])  # d = 4 and d = 10 (11 corners)
    def test_compiled_cpu_iteration_runs_in_3d_and_matches_pytorch(self, channels, monkeypatch):
        unary, guide = volume(channels, SHAPE_3D, labels=3)
        unary, p = unary.float(), volume_params(channels)
        kernels = CRFKernels(guide, p)
        assert _cpu_fused(kernels, torch.float32)  # not routed away: the compiled passes take any d
        compiled = mean_field(unary, guide, p, 5, keep=None, kernels=kernels).q
        monkeypatch.setenv("LAB_CPU_FUSED", "0")  # the block-sparse PyTorch path
        torch_path = mean_field(unary, guide, p, 5, keep=None, kernels=kernels).q
        torch.testing.assert_close(compiled, torch_path, atol=COMPILED_ATOL, rtol=0)

    @pytest.mark.parametrize("channels", [1, 7])  # d + 1 = 5 and 11 corners: the constexpr is not fixed at 6
    def test_fused_triton_iteration_in_3d_matches_pytorch(self, channels, device):
        """A smoke test (L = 3, 3×4×5); d up to 10 with L up to 64 is not covered here."""
        pytest.importorskip("triton", reason="Triton is not installed")
        unary, guide = volume(channels, (3, 4, 5), labels=3)
        unary, guide, p = unary.float().to(device), guide.to(device), volume_params(channels)
        got = mean_field(unary, guide, p, 3, keep=None, backend="triton").q
        want = mean_field(unary, guide, p, 3, keep=None, backend="torch").q
        torch.testing.assert_close(got, want, atol=TRITON_ATOL, rtol=0)

    def test_window_is_refused_for_volumes(self):
        unary, guide = volume(1, SHAPE_3D)
        with pytest.raises(ValueError, match="message_passing: 'window' filters a k × k window of a 2-D image"):
            mean_field(unary, guide, volume_params(1), message_passing="window")


# The fused Triton iteration against the PyTorch path, 3×4×5, L = 3, T = 3: measured 2026-12-02 in the
# interpreter max |ΔQ| = 4.2e-7 (C = 1) and 2.1e-7 (C = 7); the bound of tests/crf/test_triton_step.py.
TRITON_ATOL = 2e-5
# The compiled CPU iteration against the block-sparse PyTorch path in float32, 6×8×10, L = 3, T = 5: rounding
# only, measured 2026-12-02 max |ΔQ| = 1.2e-7 for C = 1 (d = 4) and C = 7 (d = 10).
COMPILED_ATOL = 1e-6


class TestGradients:
    SHAPE = (3, 4, 5)  # 60 voxels: the exact filter and gradcheck's finite differences stay cheap

    def test_gradcheck_weights_and_compat_through_the_lattice(self):
        unary, guide = volume(2, self.SHAPE)
        p = volume_params(2)
        kernels = CRFKernels(guide, p, dtype=torch.float64)

        def q_of(w_bilateral, w_spatial, compat):
            params = dataclasses.replace(p, w_bilateral=w_bilateral, w_spatial=w_spatial, compat=compat)
            return mean_field(unary, guide, params, 2, kernels=kernels).q

        inputs = (
            torch.tensor(4.0, dtype=torch.float64, requires_grad=True),
            torch.tensor([2.0, 1.0], dtype=torch.float64, requires_grad=True),  # per class
            (1 - torch.eye(2, dtype=torch.float64)).requires_grad_(),
        )
        assert torch.autograd.gradcheck(q_of, inputs)

    def test_gradcheck_per_axis_and_per_channel_theta_exact(self):
        unary, guide = volume(2, self.SHAPE)

        def q_of(log_alpha, log_beta, log_gamma):
            p = volume_params(2, theta_alpha=log_alpha.exp(), theta_beta=log_beta.exp(), theta_gamma=log_gamma.exp())
            return mean_field(unary, guide, p, 2, message_passing="exact").q

        inputs = tuple(
            torch.tensor(v, dtype=torch.float64).log().requires_grad_()
            for v in ([1.5, 3.0, 3.0], [20.0, 30.0], [1.0, 1.5, 2.0])
        )
        assert torch.autograd.gradcheck(q_of, inputs)

    def test_learned_per_axis_theta_through_the_lattice_follows_the_exact_gradient(self):
        unary, guide = volume(2, SHAPE_3D)
        target = (guide[:, 0] > 0).long()
        grads = {}
        for mp in ("lattice", "exact"):
            model = CRFRNN(2, 3, volume_params(2), learnable_bandwidths=True, message_passing=mp).double()
            torch.nn.functional.cross_entropy(model(unary, guide), target).backward()
            assert model.log_theta_alpha.shape == (3,) and model.log_theta_beta.shape == (2,)
            grads[mp] = torch.cat([getattr(model, f"log_{n}").grad.reshape(-1) for n in crf.params.BANDWIDTHS])
        cos = float(torch.nn.functional.cosine_similarity(grads["lattice"], grads["exact"], 0))
        assert cos > THETA_GRAD_COS_MIN, (cos, grads)


# The lattice's θ gradient (the analytic Gaussian gradient evaluated with the lattice) against the exact one on
# the 6×8×10 volume, C = 2, 8 θ entries (3 + 2 + 3), T = 3: measured 2026-12-02 cosine 0.987, relative error
# 0.17, every component of the same sign; the 2-D bound of tests/crf/test_learnable_bandwidths.py.
THETA_GRAD_COS_MIN = 0.95


class TestCRFRNNInND:
    def test_learnable_per_axis_theta_round_trips_and_trains(self):
        unary, guide = volume(7, SHAPE_3D)
        model = CRFRNN(2, 2, volume_params(7), learnable_bandwidths=True)
        assert tuple(model.log_theta_beta.shape) == (7,)
        logits = model(unary.float(), guide)
        assert logits.shape == (1, 2, *SHAPE_3D)
        torch.nn.functional.cross_entropy(logits, (guide[:, 0] > 0).long()).backward()
        for name in crf.params.BANDWIDTHS:
            grad = getattr(model, f"log_{name}").grad
            assert grad is not None and torch.isfinite(grad).all() and (grad != 0).any(), name
        copy = CRFRNN(2, 2, volume_params(7), learnable_bandwidths=True)
        model.set_bandwidths(theta_alpha=(2.0, 4.0, 4.0))
        copy.load_state_dict(model.state_dict())
        assert copy.bandwidths == model.bandwidths and copy.bandwidths["theta_alpha"] == pytest.approx((2.0, 4.0, 4.0))
        assert copy.get_extra_state()["spacing"] == (2.0, 1.0, 1.0)
        with pytest.raises(ValueError, match=r"theta_gamma: the learnable log θ has shape \(3,\), got 2 values"):
            model.set_bandwidths(theta_gamma=(1.0, 2.0))


class TestChecks:
    def test_unary_must_match_the_guide_grid(self):
        unary, guide = volume(1, SHAPE_3D)
        with pytest.raises(ValueError, match=r"image: expected shape \(1, 1, 6, 8, 9\) to match unary"):
            mean_field(unary[..., :9], guide)
        with pytest.raises(ValueError, match=r"unary: expected shape \(B, L, D, H, W\), got \(1, 2, 8, 10\)"):
            mean_field(unary[:, :, 0], guide)

    def test_per_axis_counts_are_checked_by_name(self):
        unary, guide = volume(7, SHAPE_3D)
        with pytest.raises(ValueError, match=r"theta_alpha: expected a number or 3 values \(one per spatial axis\)"):
            mean_field(unary, guide, volume_params(7, theta_alpha=(1.0, 2.0)))
        with pytest.raises(ValueError, match=r"theta_beta: expected a number or 7 values \(one per channel\), got 3"):
            mean_field(unary, guide, volume_params(7, theta_beta=(1.0, 2.0, 3.0)))
        with pytest.raises(ValueError, match=r"spacing: expected None, a number or 3 numbers"):
            mean_field(unary, guide, volume_params(7, spacing=(1.0, 1.0)))
        with pytest.raises(ValueError, match=r"spacing\[1\]: expected a finite number > 0"):
            CRFParams(spacing=(1.0, 0.0))

    def test_guides_other_than_photos_are_not_held_to_0_255(self):
        unary, guide = volume(1, (12, 14))  # 2-D, one channel, −100..150 (HU-like)
        assert guide.min() < 0 and mean_field(unary, guide * 10).q.isfinite().all()
        with pytest.raises(ValueError, match=r"image: expected colours in 0\.\.255"):
            mean_field(unary, guide.expand(1, 3, 12, 14))  # three channels, 2-D: an RGB photo, checked
        with pytest.raises(ValueError, match="image: expected finite values"):
            mean_field(unary, guide * float("nan"))


class TestMemory:
    def test_a_256_cubed_volume_is_refused_before_anything_is_allocated(self, monkeypatch):
        """16.8 M voxels: the features and the corner pass need about 10 GiB; refused with 4 GiB "free"."""
        side = 256
        guide = torch.zeros(1, 1, 1, 1, 1).expand(1, 1, side, side, side)  # no memory behind it
        unary = torch.zeros(1, 2, 1, 1, 1).expand(1, 2, side, side, side)
        monkeypatch.setattr(limits_module, "available_memory", lambda device: 4 << 30)

        def no_features(*args, **kwargs):
            raise AssertionError("features formed before the memory check")

        monkeypatch.setattr(crf.kernels, "bilateral_features", no_features)
        monkeypatch.setattr(crf.kernels, "spatial_features", no_features)
        expected = r"kernels: the features and lattices of a \(1, 1, 256, 256, 256\) guide \(16777216 points, d = 4\)"
        with pytest.raises(MemoryError, match=expected + r" needs about 9\.62 GiB, but only 4\.00 GiB is free"):
            mean_field(unary, guide, volume_params(1))
        need = limits_module.estimate_kernel_bytes(side**3, 4, torch.float32)
        assert need == (4 * 4 + 120 * 5) * side**3  # features in float32 + the compiled build's corner pass
