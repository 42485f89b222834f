"""The mean-field free energy and the damped / sequential schedules, against explicit matrices and sums."""

import itertools

import pytest
import torch
from inputs import small_problem

import lab.crf as crf
from lab.crf import (
    CRFKernels,
    CRFParams,
    damped_mean_field,
    free_energy,
    kernel_features,
    mean_field,
    sequential_mean_field,
)

NORMALIZATIONS = ["none", "after", "symmetric"]
SYMMETRIC = ["none", "symmetric"]  # the normalisations whose filter matrix is symmetric
# float64 sums of ~N·L·N terms of size ≤ max|w|·L: rounding ~1e-13 relative; 1e-10 leaves room
REL = 1e-10
# Sequential updates: F may only fall, up to float64 rounding of F itself (|F| ≤ ~1e3 here, ulp ~1e-13)
MONOTONE_SLACK = 1e-9


def params(normalize="symmetric", **kw):
    base = dict(theta_alpha=3.0, theta_beta=30.0, theta_gamma=1.5, w_bilateral=4.0, w_spatial=2.0)
    base.update(kw)
    return CRFParams(normalize=normalize, **base)


def random_q(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(shape, generator=g, dtype=torch.float64), 1)


def symmetric_mu(num_labels, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(num_labels, num_labels, generator=g, dtype=torch.float64)
    return a + a.T


def explicit_kernels(image, p):
    """(bilateral, spatial) (N, N) float64 matrices k̃_ij = normalised exp(−|f_i − f_j|²/2), from the formula."""
    out = []
    for feats in kernel_features(image, p, torch.float64):
        f = feats[0].reshape(feats.shape[1], -1).T  # (N, d), rows in C order
        k = torch.exp(-0.5 * ((f[:, None, :] - f[None, :, :]) ** 2).sum(-1))  # (N, N), k_ii = 1
        d = k.sum(1)
        if p.normalize == "after":
            k = k / d[:, None]
        elif p.normalize == "symmetric":
            k = k / d.sqrt()[:, None] / d.sqrt()[None, :]
        out.append(k)
    return out


def reference_terms(unary, q, image, p):
    """(unary, pairwise i ≠ j, self pairs, negative entropy) by explicit sums over pixel pairs and labels."""
    num_labels = unary.shape[1]
    u = unary[0].reshape(num_labels, -1).T  # (N, L)
    qp = q[0].reshape(num_labels, -1).T
    w = p.weights(num_labels, dtype=torch.float64)  # (K, L)
    mu = p.compat_matrix(num_labels, dtype=torch.float64).double()
    kmats = explicit_kernels(image, p)
    # A[i, l, j, l'] = µ(l, l') Σ_m w(m)_l' k̃(m)_ij
    a = sum(torch.einsum("ab,ij->iajb", mu * w[m][None, :], k) for m, k in enumerate(kmats))
    quad = torch.einsum("ia,iajb,jb->ij", qp, a, qp)  # Q_i(l) A_ij(l, l') Q_j(l')
    off = quad.sum() - quad.diagonal().sum()
    return (
        float(-(qp * u).sum()),
        float(0.5 * off),
        float(0.5 * quad.diagonal().sum()),
        float((qp * qp.log()).sum()),
    )


class TestFreeEnergy:
    @pytest.mark.parametrize("normalize", NORMALIZATIONS)
    @pytest.mark.parametrize("compat", ["potts", "matrix"])
    @pytest.mark.parametrize("per_class", [False, True])
    def test_terms_against_explicit_matrix(self, normalize, compat, per_class):
        unary, image = small_problem(6, 5, num_labels=3, seed=2)
        kw = {"compat": symmetric_mu(3, 1)} if compat == "matrix" else {}
        if per_class:
            kw.update(w_bilateral=torch.tensor([4.0, -1.0, 2.5], dtype=torch.float64), w_spatial=0.7)
        p = params(normalize, **kw)
        q = random_q(unary.shape, 3)
        e = free_energy(unary, q, image, p)
        ref = reference_terms(unary, q, image, p)
        got = [float(x) for x in (e.unary, e.pairwise, e.self_pairwise, e.neg_entropy)]
        assert got == pytest.approx(ref, rel=REL, abs=REL)
        assert float(e.total) == pytest.approx(ref[0] + ref[1] + ref[3], rel=REL)

    def test_the_explicit_matrix_is_the_exact_filter(self):
        """The test's reference matrices are the package's exact filter applied to the identity."""
        _, image = small_problem(6, 5)
        for normalize in NORMALIZATIONS:
            p = params(normalize)
            kernels = CRFKernels(image, p, "exact", dtype=torch.float64)
            eye = torch.eye(30, dtype=torch.float64)
            for k, filtered in zip(explicit_kernels(image, p), kernels.filter(eye), strict=True):
                torch.testing.assert_close(filtered, k, rtol=0, atol=1e-13)

    @pytest.mark.parametrize("normalize", SYMMETRIC)
    def test_hard_labelling_gives_the_gibbs_energy(self, normalize):
        """One label per pixel: E_Q[E] = E(x), Σ_{i<j} [x_i ≠ x_j] Σ_m w(m) k̃(m)_ij by a double loop; no entropy."""
        unary, image = small_problem(6, 5, num_labels=3, seed=5)
        p = params(normalize)
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 3, (30,), generator=g)
        q = torch.nn.functional.one_hot(x, 3).double().T.reshape(1, 3, 6, 5)
        e = free_energy(unary, q, image, p)
        kb, ks = explicit_kernels(image, p)
        pair = 0.0
        for i in range(30):
            for j in range(i + 1, 30):
                if x[i] != x[j]:
                    pair += p.w_bilateral * float(kb[i, j]) + p.w_spatial * float(ks[i, j])
        u = unary[0].reshape(3, 30).T
        assert float(e.pairwise) == pytest.approx(pair, rel=REL)
        assert float(e.unary) == pytest.approx(-float(u[torch.arange(30), x].sum()), rel=REL)
        assert float(e.neg_entropy) == 0.0 and float(e.self_pairwise) == 0.0  # µ(l, l) = 0

    @pytest.mark.parametrize("normalize", NORMALIZATIONS)
    def test_total_is_kl_minus_log_z_by_enumeration(self, normalize):
        """All 3^6 labelings of a 2 × 3 image: F = Σ_x Q(x) (log Q(x) + E(x)), E over pairs i < j with the
        kernel symmetrised; and KL(Q‖P) = F + log Z ≥ 0."""
        unary, image = small_problem(2, 3, num_labels=3, seed=4)
        mu = symmetric_mu(3, 7)
        p = params(normalize, compat=mu)
        q = random_q(unary.shape, 11)
        kb, ks = explicit_kernels(image, p)
        wk = p.w_bilateral * kb + p.w_spatial * ks
        wk = 0.5 * (wk + wk.T)
        u, qp = unary[0].reshape(3, 6).T, q[0].reshape(3, 6).T
        x = torch.cartesian_prod(*[torch.arange(3)] * 6)  # (729, 6) every labelling
        rows = torch.arange(6)
        energy = -u[rows, x].sum(1) + (torch.triu(wk, 1) * mu[x[:, :, None], x[:, None, :]]).sum((1, 2))  # E(x)
        log_qx = qp[rows, x].log().sum(1)  # log Q(x) = Σ_i log Q_i(x_i)
        total = float((log_qx.exp() * (log_qx + energy)).sum())
        log_z = float(torch.logsumexp(-energy, 0))
        f = float(free_energy(unary, q, image, p).total)
        assert f == pytest.approx(total, rel=REL)
        assert f + log_z >= 0

    @pytest.mark.parametrize("message_passing", ["exact", "window"])
    @pytest.mark.parametrize("normalize", NORMALIZATIONS)
    def test_kl_densecrf_is_the_traces_kl(self, message_passing, normalize):
        unary, image = small_problem(7, 9, num_labels=3, seed=6)
        p = params(normalize, compat=symmetric_mu(3, 2), window_size=5)
        trace = mean_field(unary, image, p, iterations=4, message_passing=message_passing)
        for t, q in enumerate(trace.history):
            e = free_energy(unary, q, image, p, message_passing)
            assert float(e.kl_densecrf) == pytest.approx(float(trace.kl[0, t]), rel=REL, abs=REL)

    def test_a_sequence_of_maps_is_each_map_alone(self):
        unary, image = small_problem(5, 6, num_labels=3, seed=1)
        p = params("after")
        maps = [random_q(unary.shape, s) for s in range(3)]
        together = free_energy(unary, maps, image, p)
        assert together.total.shape == (1, 3)
        for t, q in enumerate(maps):
            alone = free_energy(unary, q, image, p)
            for name in ("unary", "pairwise", "self_pairwise", "neg_entropy"):
                assert float(getattr(together, name)[0, t]) == pytest.approx(float(getattr(alone, name)[0]), rel=REL)
        with pytest.raises(ValueError, match=r"q\[1\]: expected the unary's shape"):
            free_energy(unary, [maps[0], maps[1][:, :2]], image, p)
        with pytest.raises(TypeError, match="q: expected a tensor or a non-empty sequence"):
            free_energy(unary, [], image, p)

    def test_batch_and_prebuilt_kernels(self):
        unary, image = small_problem(5, 6, num_labels=3, seed=1)
        unary2, image2 = small_problem(5, 6, num_labels=3, seed=8)
        ub, ib = torch.cat([unary, unary2]), torch.cat([image, image2.flip(-1)])
        p = params()
        q = random_q(ub.shape, 0)
        kernels = CRFKernels(ib, p, "exact", dtype=torch.float64)
        both = free_energy(ub, q, ib, p, kernels=kernels)
        for b in range(2):
            one = free_energy(ub[b : b + 1], q[b : b + 1], ib[b : b + 1], p)
            assert float(both.total[b]) == pytest.approx(float(one.total[0]), rel=REL)
            assert float(both.pairwise[b]) == pytest.approx(float(one.pairwise[0]), rel=REL)

    def test_refusals(self):
        unary, image = small_problem(4, 5, num_labels=3)
        p = params()
        q = torch.softmax(unary, 1)
        with pytest.raises(ValueError, match=r"q: expected the unary's shape \(1, 3, 4, 5\)"):
            free_energy(unary, q[:, :2], image, p)
        bad = q.clone()
        bad[0, 0, 0, 0] = float("nan")
        with pytest.raises(ValueError, match="q: expected finite values, got 1 NaN"):
            free_energy(unary, bad, image, p)
        with pytest.raises(ValueError, match="q: expected probabilities ≥ 0"):
            free_energy(unary, q - 0.5, image, p)
        with pytest.raises(ValueError, match="q: expected probabilities summing to 1"):
            free_energy(unary, q * 0.9, image, p)
        with pytest.raises(TypeError, match="q: expected a tensor or a non-empty sequence of tensors, got ndarray"):
            free_energy(unary, q.numpy(), image, p)
        with pytest.raises(ValueError, match="message_passing: expected one of"):
            free_energy(unary, q, image, p, "lattice")
        nan_unary = unary.clone()
        nan_unary[0, 1, 2, 3] = float("nan")
        with pytest.raises(ValueError, match="unary: expected finite values"):
            free_energy(nan_unary, q, image, p)
        with pytest.raises(ValueError, match="kernels: the self pair's weight is known"):
            crf.filter_self_weights(CRFKernels(image, p, "lattice"))
        with pytest.raises(ValueError, match="kernels: built for other parameters"):
            free_energy(unary, q, image, p, kernels=CRFKernels(image, params("after"), "exact"))
        assert torch.equal(q, torch.softmax(unary, 1))  # the input was not overwritten


class TestSequential:
    @pytest.mark.parametrize("normalize", SYMMETRIC)
    @pytest.mark.parametrize("seed", range(4))
    def test_free_energy_never_increases(self, normalize, seed):
        """Random unary, µ and weights of either sign: each sweep of exact coordinate descent lowers F."""
        unary, image = small_problem(5, 6, num_labels=3, seed=seed)
        g = torch.Generator().manual_seed(seed)
        wb, ws = (float(v) for v in 12 * torch.rand(2, generator=g) - 6)
        compat = "potts" if seed % 2 else symmetric_mu(3, seed)
        p = params(normalize, w_bilateral=wb, w_spatial=ws, compat=compat)
        trace = sequential_mean_field(unary, image, p, sweeps=6)
        f = [float(free_energy(unary, q, image, p).total) for q in trace.history]
        assert all(b <= a + MONOTONE_SLACK * max(1.0, abs(a)) for a, b in itertools.pairwise(f)), f

    def test_every_single_pixel_update_lowers_f(self):
        """Pixel by pixel, in a random order, by explicit matrices: F never rises after any of the N updates of
        a sweep, and the sweep ends where sequential_mean_field does."""
        unary, image = small_problem(4, 5, num_labels=3, seed=3)
        p = params(w_bilateral=-5.0, w_spatial=3.0)
        order = torch.randperm(20, generator=torch.Generator().manual_seed(1))
        f = [float(free_energy(unary, _partial_sweep(unary, image, p, order[:k]), image, p).total) for k in range(21)]
        assert all(b <= a + MONOTONE_SLACK * max(1.0, abs(a)) for a, b in itertools.pairwise(f)), f
        trace = sequential_mean_field(unary, image, p, sweeps=1, order=order)
        torch.testing.assert_close(trace.q, _partial_sweep(unary, image, p, order), rtol=0, atol=1e-13)

    def test_fixed_point_of_the_self_free_update(self):
        """Many sweeps reach Q = softmax(U − µ Σ_m w(m) Σ_{j≠i} k̃(m)_ij Q_j), checked with explicit matrices."""
        unary, image = small_problem(5, 6, num_labels=3, seed=2)
        p = params(compat=symmetric_mu(3, 3))
        q = sequential_mean_field(unary, image, p, sweeps=60).q
        assert _fixed_point_residual(unary, q, image, p, self_pairs=False) < 1e-10

    def test_self_pairs_potts_nonnegative_weights(self):
        """With the self pair (the package's messages), Potts and w ≥ 0: total + self_pairwise never rises."""
        unary, image = small_problem(5, 6, num_labels=4, seed=9)
        p = params(w_bilateral=8.0, w_spatial=3.0)
        trace = sequential_mean_field(unary, image, p, sweeps=6, self_pairs=True)
        f = []
        for q in trace.history:
            e = free_energy(unary, q, image, p)
            f.append(float(e.total + e.self_pairwise))
        assert all(b <= a + MONOTONE_SLACK * max(1.0, abs(a)) for a, b in itertools.pairwise(f)), f
        q = sequential_mean_field(unary, image, p, sweeps=60, self_pairs=True).q
        assert _fixed_point_residual(unary, q, image, p, self_pairs=True) < 1e-10

    def test_zero_sweeps_and_batch(self):
        unary, image = small_problem(4, 5, num_labels=3, seed=1)
        p = params()
        trace = sequential_mean_field(unary, image, p, sweeps=0)
        torch.testing.assert_close(trace.q, torch.softmax(unary, 1), rtol=0, atol=1e-15)
        both = sequential_mean_field(torch.cat([unary, unary.flip(1)]), torch.cat([image, image]), p, sweeps=3)
        one = sequential_mean_field(unary.flip(1), image, p, sweeps=3)
        torch.testing.assert_close(both.q[1:], one.q, rtol=0, atol=1e-14)

    def test_refusals(self):
        unary, image = small_problem(4, 5, num_labels=3)
        p = params()
        with pytest.raises(ValueError, match="kernels: built for other parameters"):
            sequential_mean_field(unary, image, p, kernels=CRFKernels(image, p, "lattice"))
        with pytest.raises(ValueError, match="order: expected a"):
            sequential_mean_field(unary, image, p, order=torch.zeros(20, dtype=torch.long))
        with pytest.raises(ValueError, match="sweeps: expected an integer >= 0"):
            sequential_mean_field(unary, image, p, sweeps=-1)
        big = torch.zeros(1, 2, 65, 64, dtype=torch.float64)
        with pytest.raises(ValueError, match="at most 4096 pixels per image, got 4160"):
            sequential_mean_field(big, torch.zeros(1, 3, 65, 64), p)


class TestDamped:
    @pytest.mark.parametrize(
        ("message_passing", "dtype", "atol"),
        [
            ("exact", torch.float64, 1e-12),  # the same PyTorch steps
            ("window", torch.float64, 1e-12),
            ("lattice", torch.float32, 1e-6),  # mean_field runs the compiled CPU iteration: float32 rounding
        ],
    )
    def test_lambda_one_is_mean_field(self, message_passing, dtype, atol):
        unary, image = small_problem(9, 11, num_labels=4, seed=3)
        unary = unary.to(dtype)
        p = params("after", window_size=5)
        ours = damped_mean_field(unary, image, p, 5, 1.0, message_passing)
        ref = mean_field(unary, image, p, 5, message_passing=message_passing)
        for a, b in zip(ours.history, ref.history, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=atol)

    def test_lambda_one_is_mean_field_without_the_matrices(self, monkeypatch):
        """Above MATRIX_POINTS the exact filter runs as itself: the same Q."""
        from lab.crf import schedules

        monkeypatch.setattr(schedules, "MATRIX_POINTS", 0)
        unary, image = small_problem(6, 7, num_labels=3, seed=2)
        p = params("symmetric")
        ours = damped_mean_field(unary, image, p, 4, 1.0, "exact")
        ref = mean_field(unary, image, p, 4, message_passing="exact")
        torch.testing.assert_close(ours.q, ref.q, rtol=0, atol=1e-12)

    def test_damped_step_by_hand(self):
        unary, image = small_problem(6, 7, num_labels=3, seed=1)
        p = params()
        lam = 0.3
        trace = damped_mean_field(unary, image, p, 2, lam, "exact")
        q0 = torch.softmax(unary, 1)
        q1 = (1 - lam) * q0 + lam * mean_field(unary, image, p, 1, message_passing="exact").q
        torch.testing.assert_close(trace.history[1], q1, rtol=0, atol=1e-14)
        step = crf.iteration  # the second step from Q1, by the package's steps
        kernels = trace.kernels
        w = p.weights(3, dtype=torch.float64)

        def weighted(q):
            messages = kernels.filter(q)
            return messages, crf.weighting(messages, w)

        _, proposal, *_ = step(kernels.to_points(q1), kernels.to_points(unary), weighted, "potts")
        q2 = (1 - lam) * q1 + lam * kernels.to_image(proposal)
        torch.testing.assert_close(trace.q, q2, rtol=0, atol=1e-14)

    def test_without_self_pairs_matches_explicit_update(self):
        unary, image = small_problem(5, 6, num_labels=3, seed=4)
        p = params(compat=symmetric_mu(3, 5))
        trace = damped_mean_field(unary, image, p, 1, 1.0, "exact", self_pairs=False)
        q0 = torch.softmax(unary, 1)
        torch.testing.assert_close(trace.q, _explicit_update(unary, q0, image, p, self_pairs=False), rtol=0, atol=1e-13)

    def test_refusals(self):
        unary, image = small_problem(4, 5, num_labels=3)
        for bad in (0.0, 1.5, float("nan")):
            with pytest.raises(ValueError, match=r"damping: expected a number in \(0, 1\]"):
                damped_mean_field(unary, image, params(), 2, bad)
        with pytest.raises(TypeError, match="damping: expected a number"):
            damped_mean_field(unary, image, params(), 2, True)
        with pytest.raises(ValueError, match="kernels: the self pair's weight is known"):
            damped_mean_field(unary, image, params(), 2, 0.5, "lattice", self_pairs=False)


# ------------------------------------------------------------------------------------------ helpers
def _explicit_update(unary, q, image, p, self_pairs):
    """softmax(U − µ Σ_m w(m) k̃(m) Q) with the explicit matrices, the diagonal dropped unless self_pairs."""
    num_labels = unary.shape[1]
    qp = q[0].reshape(num_labels, -1).T
    u = unary[0].reshape(num_labels, -1).T
    w = p.weights(num_labels, dtype=torch.float64)
    mu = p.compat_matrix(num_labels, dtype=torch.float64).double()
    msg = 0
    for m, k in enumerate(explicit_kernels(image, p)):
        if not self_pairs:
            k = k - torch.diag(k.diagonal())
        msg = msg + w[m] * (k @ qp)
    new = torch.softmax(u - msg @ mu.T, 1)
    return new.T.reshape(q.shape)


def _fixed_point_residual(unary, q, image, p, self_pairs):
    return float((_explicit_update(unary, q, image, p, self_pairs) - q).abs().max())


def _partial_sweep(unary, image, p, visit):
    """Q after updating only the pixels ``visit`` (in order) once, from softmax(U), with explicit matrices."""
    num_labels = unary.shape[1]
    u = unary[0].reshape(num_labels, -1).T
    q = torch.softmax(u, 1)
    w = p.weights(num_labels, dtype=torch.float64)
    mu = p.compat_matrix(num_labels, dtype=torch.float64).double()
    kmats = [k - torch.diag(k.diagonal()) for k in explicit_kernels(image, p)]
    for i in visit.tolist():
        msg = sum(w[m] * (k[i] @ q) for m, k in enumerate(kmats))
        q[i] = torch.softmax(u[i] - mu @ msg, 0)
    return q.T.reshape(unary.shape)
