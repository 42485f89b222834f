"""Mean field: the identities it must satisfy, its gradients, and the lattice against the exact model."""

import itertools
import math

import pytest
import torch
from inputs import image_tensor, photo, small_problem, synthetic_unary

import lab.crf as crf
from lab.crf import CRFKernels, CRFParams, mean_field
from lab.crf.steps import softmax

NORMALIZATIONS = ["none", "after", "symmetric"]
MESSAGE_PASSING = ["lattice", "exact", "window"]
# Lattice CRF against the exact CRF (same θ, 24×32 photo crops, 4 labels, w = (5, 3), float64, T = 5),
# measured 2026-11-25 over the crops and normalisations below: argmax agreement ≥ 0.945 (the worst is
# chelsea at T = 5; it is 0.98–0.99 after one iteration), mean |ΔQ| ≤ 0.0241. Single pixels whose label
# flips reach |ΔQ| ≈ 0.9, so the max is not bounded. The gap grows with the weights (w = (10, 3): agreement
# down to 0.90 with "after"): mean field amplifies the lattice's small message error near decision
# boundaries. pydensecrf builds the same lattice, so it has the same gap (docs/lattice.md).
LATTICE_MIN_AGREEMENT = 0.92
LATTICE_MAX_MEAN_DQ = 0.035
# One message of the lattice vs exact from the same Q, relative L2 of the label differences: measured
# 0.051–0.063 (bilateral) and 0.021–0.022 (spatial) on these crops.
LATTICE_MESSAGE_REL_ERR = (0.09, 0.035)
# float32 fused (block-sparse) path vs the unfused steps: rounding only. Measured |Δ logits| / max|logits|
# ≤ 4.1e-7 ("none": unnormalised sums, logits ~700) and ≤ 1.2e-7 ("after", "symmetric"); |ΔQ| ≤ |Δ logits|.
FUSED_REL = 2e-6


def params(normalize="symmetric", **kw):
    base = dict(theta_alpha=8.0, theta_beta=13.0, theta_gamma=3.0, w_bilateral=4.0, w_spatial=2.0)
    base.update(kw)
    return CRFParams(normalize=normalize, **base)


class TestIdentities:
    @pytest.mark.parametrize("message_passing", MESSAGE_PASSING)
    def test_zero_weights_give_softmax_of_unary_exactly(self, message_passing):
        unary, image = small_problem()
        p = params(w_bilateral=0.0, w_spatial=0.0, compat=torch.rand(3, 3, dtype=torch.float64))
        trace = mean_field(unary, image, p, iterations=3, message_passing=message_passing)
        # Q̌ = 0 exactly, so Q is the softmax over the labels of U itself, to float64 rounding (mean field
        # computes it as exp(U − max) / Σ for few labels, torch.softmax's reduction order may differ by an ulp)
        expected = torch.softmax(unary.permute(0, 2, 3, 1), -1).permute(0, 3, 1, 2)
        torch.testing.assert_close(trace.q, expected, rtol=0, atol=1e-15)
        assert torch.equal(trace.logits, unary)
        for q in trace.history:
            torch.testing.assert_close(q, expected, rtol=0, atol=1e-15)

    def test_zero_iterations(self):
        unary, image = small_problem()
        trace = mean_field(unary, image, params(), iterations=0, keep="steps")
        assert torch.equal(trace.logits, unary)
        expected = torch.softmax(unary.permute(0, 2, 3, 1), -1).permute(0, 3, 1, 2)
        torch.testing.assert_close(trace.q, expected, rtol=0, atol=1e-15)
        assert len(trace.history) == 1 and trace.steps == ()

    @pytest.mark.parametrize("message_passing", MESSAGE_PASSING)
    def test_batch_independence(self, message_passing):
        u1, im1 = small_problem(seed=1)
        u2 = synthetic_unary(3, 10, 12, seed=7, dtype=torch.float64)
        im2 = image_tensor(photo("astronaut", slice(10, 20), slice(30, 42)))
        p = params()
        batched = mean_field(torch.cat([u1, u2]), torch.cat([im1, im2]), p, 4, message_passing=message_passing)
        for b, (u, im) in enumerate([(u1, im1), (u2, im2)]):
            alone = mean_field(u, im, p, 4, message_passing=message_passing)
            torch.testing.assert_close(batched.q[b : b + 1], alone.q, atol=1e-12, rtol=0)
            torch.testing.assert_close(batched.logits[b : b + 1], alone.logits, atol=1e-12, rtol=0)

    @pytest.mark.parametrize("message_passing", MESSAGE_PASSING)
    @pytest.mark.parametrize("compat", ["potts", "matrix"])
    def test_steps_recompose(self, message_passing, compat):
        """Applying the six steps by hand to steps[t−1].q gives steps[t], and the history is the steps' q."""
        unary, image = small_problem()
        mu = torch.rand(3, 3, dtype=torch.float64) if compat == "matrix" else "potts"
        w_bil = torch.tensor([3.0, 5.0, 1.0], dtype=torch.float64)  # per class
        p = params(compat=mu, w_bilateral=w_bil)
        trace = mean_field(unary, image, p, iterations=3, keep="steps", message_passing=message_passing)
        weights = p.weights(3, dtype=torch.float64)
        q = crf.initialization(unary)
        torch.testing.assert_close(trace.history[0], q, atol=1e-15, rtol=0)  # softmax reduction order only
        for t, step in enumerate(trace.steps):
            messages = crf.message_passing(q, trace.kernels)
            weighted = crf.weighting(messages, weights)
            transformed = crf.compatibility_transform(weighted, mu)
            logits = crf.add_unary(unary, transformed)
            q = crf.normalization(logits)
            for got, want in zip(step.messages, messages, strict=True):
                torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
            torch.testing.assert_close(step.weighted, weighted, atol=1e-12, rtol=0)
            torch.testing.assert_close(step.transformed, transformed, atol=1e-12, rtol=0)
            torch.testing.assert_close(step.logits, logits, atol=1e-12, rtol=0)
            torch.testing.assert_close(step.q, q, atol=1e-12, rtol=0)
            torch.testing.assert_close(trace.history[t + 1], step.q, atol=0, rtol=0)
        torch.testing.assert_close(trace.q, q, atol=1e-12, rtol=0)
        torch.testing.assert_close(trace.logits, trace.steps[-1].logits, atol=0, rtol=0)

    def test_potts_transform_equals_matrix(self):
        x = torch.rand(2, 4, 3, 5, dtype=torch.float64)
        torch.testing.assert_close(
            crf.compatibility_transform(x, "potts"), crf.compatibility_transform(x, crf.potts_compat(4).double())
        )

    def test_window_covering_the_image_is_exact(self):
        unary, image = small_problem(8, 9)
        p = params(window_size=17)  # radius 8 ≥ every pixel offset of an 8 × 9 image
        exact = mean_field(unary, image, p, 3, message_passing="exact")
        window = mean_field(unary, image, p, 3, message_passing="window")
        torch.testing.assert_close(window.q, exact.q, atol=1e-12, rtol=0)

    def test_window_truncates(self):
        unary, image = small_problem(8, 9)
        exact = mean_field(unary, image, params(window_size=17), 3, message_passing="exact")
        window = mean_field(unary, image, params(window_size=3), 3, message_passing="window")
        assert (window.q - exact.q).abs().max() > 1e-3

    @pytest.mark.parametrize("normalize", NORMALIZATIONS)
    def test_normalisations_agree_with_lattice_filter(self, normalize):
        unary, image = small_problem()
        trace = mean_field(unary, image, params(normalize), 1, keep="steps")
        kernels = trace.kernels
        q0 = kernels.to_points(trace.history[0])
        want = kernels.to_image(kernels.lattices[0].filter_points(q0, normalize))
        torch.testing.assert_close(trace.steps[0].messages[0], want, atol=1e-12, rtol=0)

    def test_does_not_mutate_inputs(self):
        unary, image = small_problem()
        u0, im0 = unary.clone(), image.clone()
        with torch.no_grad():
            mean_field(unary, image, params(), 3, keep=None)
        mean_field(unary, image, params(), 3, keep="steps")
        assert torch.equal(unary, u0) and torch.equal(image, im0)

    def test_noncontiguous_and_float_image(self):
        unary, image = small_problem()
        u_nc = unary.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
        assert not u_nc.is_contiguous()
        a = mean_field(unary, image, params(), 2).q
        b = mean_field(u_nc, image.float(), params(), 2).q
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


class TestFused:
    @pytest.mark.parametrize("normalize", NORMALIZATIONS)
    @pytest.mark.parametrize("compat", ["potts", "matrix", "per_class"])
    def test_fused_equals_steps(self, normalize, compat):
        img = photo("astronaut")
        h, w = img.shape[:2]
        unary = synthetic_unary(5, h, w, seed=3)
        kw = {}
        if compat == "matrix":
            kw["compat"] = torch.rand(5, 5)
        if compat == "per_class":
            kw["w_spatial"] = torch.linspace(1, 3, 5)
        p = params(normalize, **kw)
        image = image_tensor(img)
        steps = mean_field(unary, image, p, 4, keep="steps")
        with torch.no_grad():
            fused = mean_field(unary, image, p, 4, keep="q")
        atol = FUSED_REL * steps.logits.abs().max().item()
        torch.testing.assert_close(fused.logits, steps.logits, atol=atol, rtol=0)
        for a, b in zip(fused.history, steps.history, strict=True):
            torch.testing.assert_close(a, b, atol=atol, rtol=0)
        torch.testing.assert_close(fused.q, steps.q, atol=atol, rtol=0)

    def test_grad_path_equals_no_grad_path(self):
        unary, image = small_problem()
        u = unary.clone().requires_grad_()
        with_grad = mean_field(u, image, params(), 3, keep=None)
        with torch.no_grad():
            without = mean_field(unary, image, params(), 3, keep=None)
        torch.testing.assert_close(with_grad.logits.detach(), without.logits, atol=1e-10, rtol=0)


class TestAgainstExact:
    @pytest.mark.parametrize(
        ("name", "rows", "cols"),
        [("chelsea", slice(100, 124), slice(150, 182)), ("astronaut", slice(60, 84), slice(200, 232))],
    )
    @pytest.mark.parametrize("normalize", ["symmetric", "after"])
    def test_lattice_crf_close_to_exact_crf(self, name, rows, cols, normalize):
        img = photo(name, rows, cols)
        h, w = img.shape[:2]
        unary = synthetic_unary(4, h, w, seed=5, dtype=torch.float64)
        image = image_tensor(img)
        p = params(normalize, w_bilateral=5.0, w_spatial=3.0)
        exact = mean_field(unary, image, p, 5, keep="steps", message_passing="exact")
        lattice = mean_field(unary, image, p, 5, keep="steps", message_passing="lattice")
        agreement = (exact.q.argmax(1) == lattice.q.argmax(1)).double().mean().item()
        mean_dq = (exact.q - lattice.q).abs().mean().item()
        assert agreement >= LATTICE_MIN_AGREEMENT, agreement
        assert mean_dq <= LATTICE_MAX_MEAN_DQ, mean_dq
        # One message per kernel from the same Q (Q0): the lattice's own approximation error.
        q0 = exact.history[0]
        for m_exact, m_lattice, bound in zip(
            crf.message_passing(q0, exact.kernels),
            crf.message_passing(q0, lattice.kernels),
            LATTICE_MESSAGE_REL_ERR,
            strict=True,
        ):
            e = m_exact - m_exact.mean(1, keepdim=True)  # label differences decide mean field
            err = ((m_lattice - m_lattice.mean(1, keepdim=True) - e).norm() / e.norm()).item()
            assert err <= bound, err


class TestSoftmax:
    @pytest.mark.parametrize("num_labels", [1, 2, 5, 15, 16, 21])
    def test_matches_torch_softmax(self, num_labels):
        """The exp/Σ form below 16 labels (and torch.softmax from 16) against torch.softmax, large scores too."""
        x = torch.randn(300, num_labels, generator=torch.Generator().manual_seed(num_labels)) * 30
        x[0] = 1e4  # exp would overflow without the max subtracted
        want = torch.softmax(x, 1)
        got = softmax(x, 1)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(softmax(x.t().contiguous(), 0), want.t(), rtol=1e-6, atol=1e-7)

    def test_keeps_the_gradient(self):
        x = torch.randn(20, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: softmax(t, 1), (x,))


class TestKL:
    @pytest.mark.parametrize("compat", ["potts", "matrix"])
    @pytest.mark.parametrize("normalize", ["none", "after"])
    @pytest.mark.parametrize("iterations", [2, 25])  # 25: 26 maps × 3 labels, filtered in two groups of ≤ 64
    def test_kl_against_brute_force(self, compat, normalize, iterations):
        """Enumerate all L^N labelings of a 2 × 3 image: Σ_x Q(x) (log Q(x) + E(x)), E with every ordered
        pair i ≠ j; trace.kl adds the self pairs (as pydensecrf) in product form."""
        unary, image = small_problem(2, 3, num_labels=3, seed=4)
        g = torch.Generator().manual_seed(0)
        mu = torch.rand(3, 3, generator=g, dtype=torch.float64) if compat == "matrix" else crf.potts_compat(3).double()
        p = params(normalize, compat=mu if compat == "matrix" else "potts", theta_alpha=2.0, theta_gamma=1.5)
        trace = mean_field(unary, image, p, iterations, message_passing="exact")
        n, num_labels = 6, 3
        # Kernel matrices K(m)_ij, normalised as the model does (rows: "after"), from the exact filter.
        eye = torch.eye(n, dtype=torch.float64)
        kmats = []
        for m in range(2):
            cols = [trace.kernels.filter(eye[:, j : j + 1].expand(n, 1).contiguous())[m][:, 0] for j in range(n)]
            kmats.append(torch.stack(cols, 1))  # (N, N), column j = K e_j
        wk = p.w_bilateral * kmats[0] + p.w_spatial * kmats[1]
        u = trace.kernels.to_points(unary)  # (N, L)
        for t, q_img in enumerate(trace.history):
            q = trace.kernels.to_points(q_img)
            total = 0.0
            for labels in itertools.product(range(num_labels), repeat=n):
                idx = torch.tensor(labels)
                qx = q[torch.arange(n), idx].prod().item()
                energy = -u[torch.arange(n), idx].sum().item()
                pair = wk * mu[idx][:, idx]  # w·k_ij·µ(x_i, x_j)
                energy += (pair.sum() - pair.diagonal().sum()).item()  # ordered pairs i ≠ j
                total += qx * (math.log(qx) + energy)
            self_pairs = (wk.diagonal()[:, None] * q * (q @ mu.T)).sum().item()
            assert trace.kl[0, t].item() == pytest.approx(total + self_pairs, rel=1e-9, abs=1e-9)

    def test_kl_decreases_for_symmetric_potts(self):
        img = photo("chelsea")
        h, w = img.shape[:2]
        unary = synthetic_unary(3, h, w, seed=2, dtype=torch.float64)
        trace = mean_field(unary, image_tensor(img), params("symmetric", w_bilateral=1.0, w_spatial=0.5), 6)
        kl = trace.kl[0]
        assert kl.shape == (7,)
        assert bool((kl[1:] < kl[0]).all()), kl  # mean field moves Q away from softmax(U) downhill

    def test_kl_gradient_against_finite_differences(self):
        q = torch.softmax(torch.randn(12, 3, dtype=torch.float64), 1).requires_grad_()
        u = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
        t = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda *a: crf.kl_divergence(*a, batch_size=2), (q, u, t))

    def test_kl_needs_history(self):
        unary, image = small_problem()
        with pytest.raises(ValueError, match="kl: needs the history"):
            _ = mean_field(unary, image, params(), 2, keep=None).kl


class TestGradients:
    @pytest.mark.parametrize(
        ("message_passing", "normalize"), [("lattice", "after"), ("lattice", "symmetric"), ("exact", "after")]
    )
    def test_gradcheck_unary_weights_compat(self, message_passing, normalize):
        unary, image = small_problem(3, 4, num_labels=3)
        u = unary.clone().requires_grad_()
        wb = torch.tensor([2.0, 3.0, 1.0], dtype=torch.float64, requires_grad=True)  # per class
        ws = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
        mu = (crf.potts_compat(3).double() + 0.1 * torch.rand(3, 3, dtype=torch.float64)).requires_grad_()

        def f(u, wb, ws, mu):
            p = params(normalize, w_bilateral=wb, w_spatial=ws, compat=mu, theta_alpha=2.0)
            return mean_field(u, image, p, 2, keep=None, message_passing=message_passing).logits

        assert torch.autograd.gradcheck(f, (u, wb, ws, mu), eps=1e-6, atol=1e-6)

    def test_checkpoint_gives_the_same_gradients(self):
        unary, image = small_problem()
        grads = []
        for ckpt in (False, True):
            u = unary.clone().requires_grad_()
            ws = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
            out = mean_field(u, image, params(w_spatial=ws), 3, keep=None, checkpoint=ckpt).logits
            (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
            grads.append((u.grad, ws.grad))
        torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-12, rtol=0)
        torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-12, rtol=0)


class TestErrors:
    """Refusals that need a built CRF; the bad-input table is tests/test_errors.py."""

    def test_prebuilt_kernels_must_match(self):
        unary, image = small_problem()
        kernels = CRFKernels(image[..., :6], params())
        with pytest.raises(ValueError, match="kernels: built for"):
            mean_field(unary, image, params(), kernels=kernels)

    def test_explicit_triton_without_cuda_raises(self, monkeypatch):
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        unary, image = small_problem()
        with pytest.raises(RuntimeError, match="backend='triton'"):
            mean_field(unary, image, params(), backend="triton")


@pytest.mark.interpreter
def test_triton_backend_matches_torch(monkeypatch):
    """Backend "triton" (fused iteration when keep != "steps") against the PyTorch steps, in the interpreter."""
    pytest.importorskip("triton")
    import lab.crf.triton_step as triton_step

    calls = []
    original = triton_step.fused_mean_field_iteration

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(triton_step, "fused_mean_field_iteration", counting)
    img = photo("astronaut", slice(0, 17), slice(0, 23))
    unary = synthetic_unary(5, 17, 23, seed=9)
    image = image_tensor(img)
    for normalize in NORMALIZATIONS:
        ref = mean_field(unary, image, params(normalize), 3, keep="steps", backend="torch")
        with torch.no_grad():
            got = mean_field(unary, image, params(normalize), 3, keep="q", backend="triton")
        atol = FUSED_REL * ref.logits.abs().max().item()
        torch.testing.assert_close(got.logits, ref.logits, atol=atol, rtol=0)
        torch.testing.assert_close(got.q, ref.q, atol=atol, rtol=0)
    assert len(calls) == 3 * len(NORMALIZATIONS)  # the fused iteration ran, once per iteration
