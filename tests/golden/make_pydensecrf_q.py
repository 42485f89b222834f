"""Write ``tests/golden/pydensecrf_q.npz``: pydensecrf's Q and KL on one small problem, for the golden parity test.

Run from the repository root, with pydensecrf2 installed (``pip install -e ".[peers]"``)::

    python tests/golden/make_pydensecrf_q.py

The problem: a 32×32 crop of scikit-image's astronaut (rows 72..104, cols 200..232: fringe, forehead,
brow and the top of an eye, inside the live test's 96×128 crop), the smooth synthetic unary of
``tests/inputs.py`` (L = 4, seed 3), the parameters of the live parity test (``tests/crf/test_pydensecrf.py``:
θα = 80, θβ = 13, θγ = 3, w = 10 / 3, Potts, symmetric normalisation). The file holds the inputs themselves
(image and unary, so the test does not depend on scikit-image's photo or on the unary generator staying the
same), a JSON description of them, pydensecrf's Q after 1 and after 5 iterations, and its ``klDivergence``
of its own Q after 0..5 iterations.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "pydensecrf_q.npz"
ROWS, COLS = (72, 104), (200, 232)
NUM_LABELS, UNARY_SEED, ITERATIONS = 4, 3, 5
Q_ITERATIONS = (1, 5)
# The live parity test's parameters (THETA in tests/crf/test_pydensecrf.py).
THETA = dict(theta_alpha=80.0, theta_beta=13.0, theta_gamma=3.0, w_bilateral=10.0, w_spatial=3.0)


def main() -> None:
    """Run pydensecrf on the crop and write the golden file."""
    from importlib.metadata import version

    sys.path.insert(0, str(HERE.parent))  # tests/, for the shared inputs
    from inputs import photo, synthetic_unary
    from pydensecrf import densecrf as dcrf
    from pydensecrf import eigen

    img = photo("astronaut", slice(*ROWS), slice(*COLS))
    h, w = img.shape[:2]
    unary = synthetic_unary(NUM_LABELS, h, w, seed=UNARY_SEED)[0].numpy()  # (L, H, W) float32 log-probabilities
    crf = dcrf.DenseCRF2D(w, h, NUM_LABELS)
    crf.setUnaryEnergy(np.ascontiguousarray(-unary.reshape(NUM_LABELS, -1)))  # energy = −U
    crf.addPairwiseGaussian(sxy=THETA["theta_gamma"], compat=THETA["w_spatial"])
    crf.addPairwiseBilateral(sxy=THETA["theta_alpha"], srgb=THETA["theta_beta"], rgbim=img, compat=THETA["w_bilateral"])
    qs = {t: np.array(crf.inference(t), dtype=np.float32).reshape(NUM_LABELS, h, w) for t in range(ITERATIONS + 1)}
    kl = [crf.klDivergence(eigen.matrixXf(np.ascontiguousarray(qs[t].reshape(NUM_LABELS, -1)))) for t in qs]
    description = {
        "image": f"skimage.data.astronaut()[{ROWS[0]}:{ROWS[1]}, {COLS[0]}:{COLS[1]}]",
        "unary": f"tests/inputs.py synthetic_unary({NUM_LABELS}, {h}, {w}, seed={UNARY_SEED}), float32",
        "params": {**THETA, "normalize": "symmetric", "compat": "Potts"},
        "pydensecrf2": version("pydensecrf2"),
        "made_by": "python tests/golden/make_pydensecrf_q.py",
    }
    np.savez_compressed(
        GOLDEN,
        description=np.array(json.dumps(description)),
        image=img,
        unary=unary,
        q_iterations=np.array(Q_ITERATIONS),
        q=np.stack([qs[t] for t in Q_ITERATIONS]),
        kl=np.array(kl, dtype=np.float64),
    )
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes): pydensecrf2 {description['pydensecrf2']}, KL {kl}")


if __name__ == "__main__":
    main()
