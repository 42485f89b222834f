"""The app's cache is bounded in bytes: its accounting matches the tensors, it evicts to its budget, and the
real script's RSS stays bounded while θ keeps changing (each new θ is a new lattice pair)."""

import gc
from pathlib import Path

import numpy as np
import pytest
import torch

from lab.crf import CRFKernels, CRFParams
from lab.explore import (
    CACHE_BUDGET_BYTES,
    CACHE_BUDGET_ENV,
    ByteBudgetCache,
    app_cache,
    cache_budget,
    run_crf,
    tensor_nbytes,
    trim_heap,
)

MiB = 2**20


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


# ------------------------------------------------------------------------------------ byte accounting
def test_dense_tensor_views_and_arrays_count_their_buffers_once():
    x = torch.zeros(1000, dtype=torch.float64)
    a = np.zeros((10, 10), np.int16)
    assert tensor_nbytes(x) == 8000
    assert tensor_nbytes([x, x[:10], x.view(10, 100)]) == 8000  # views share the storage
    assert tensor_nbytes(x[:10]) == 8000  # a view keeps its whole storage alive
    assert tensor_nbytes({"a": a, "b": a[2:], "c": a.copy()}) == 400
    assert tensor_nbytes(x, torch.ones(3)) == 8012
    assert tensor_nbytes("text", 3, None) == 0


def test_sparse_matrices_count_indices_and_values():
    crow, col, values = torch.arange(51), torch.arange(50), torch.ones(50)
    csr = torch.sparse_csr_tensor(crow, col, values, (50, 50))
    assert tensor_nbytes(csr) == 51 * 8 + 50 * 8 + 50 * 4
    coo = torch.eye(50).to_sparse()
    assert tensor_nbytes(coo) == nbytes(coo._indices()) + nbytes(coo._values()) == 2 * 50 * 8 + 50 * 4
    # to_sparse_csr's column indices are a view of a (2, nnz) index storage: the whole storage stays alive
    from_dense = torch.eye(50).to_sparse_csr()
    assert from_dense.col_indices().untyped_storage().nbytes() == 2 * 50 * 8
    assert tensor_nbytes(from_dense) == 51 * 8 + 2 * 50 * 8 + 50 * 4


def test_a_lattice_structure_counts_every_field_and_shared_storage_once():
    kernels = CRFKernels(torch.rand(1, 3, 24, 32) * 255, CRFParams())
    s = kernels.lattices[0].structure
    storages = {}  # data pointer → bytes, from the dataclass's fields and each CSR matrix's three tensors
    for value in vars(s).values():
        for t in value if isinstance(value, tuple) else (value,):
            if isinstance(t, torch.Tensor):
                parts = (t.crow_indices(), t.col_indices(), t.values()) if t.layout == torch.sparse_csr else (t,)
                for p in parts:
                    storages[p.untyped_storage().data_ptr()] = p.untyped_storage().nbytes()
    assert len(storages) >= 8  # slice and splat (3 each), neighbours, the batch counts, …
    assert tensor_nbytes(s) == sum(storages.values())


def test_kernels_grow_when_first_used_and_the_count_follows():
    image = torch.rand(1, 3, 24, 32) * 255
    kernels = CRFKernels(image, CRFParams())
    built = tensor_nbytes(kernels)
    assert built >= sum(tensor_nbytes(lat.structure) for lat in kernels.lattices)
    run_crf(torch.randn(1, 3, 24, 32), image, CRFParams(), 3, kernels)
    assert tensor_nbytes(kernels) > built  # what inference made on first use (operators, the compiled path's tables)


# ------------------------------------------------------------------------------------ the cache
def test_cache_evicts_the_least_recently_used_to_its_budget():
    cache = ByteBudgetCache(budget_bytes=10_000)
    for key in "abc":
        cache.put(key, torch.zeros(1000))  # 4000 bytes each
    assert list(cache) == ["b", "c"] and cache.nbytes == 8000 and cache.evictions == 1
    assert cache.get("b") is not None  # "b" is now the most recently used
    cache.put("d", torch.zeros(1000))
    assert list(cache) == ["b", "d"] and cache.nbytes == 8000
    assert cache.get("a") is None and "a" not in cache


def test_cache_keeps_nothing_over_its_budget_and_counts_shared_buffers_once():
    cache = ByteBudgetCache(budget_bytes=10_000)
    cache.put("small", torch.zeros(1000))
    big = torch.zeros(5000)  # 20000 bytes: over the whole budget
    assert cache.put("big", big) is big  # returned for use, not kept
    assert list(cache) == ["small"] and cache.nbytes == 4000
    shared = torch.zeros(1500)  # 6000 bytes held by two values
    cache.put("x", (shared, torch.zeros(10)))
    cache.put("y", (shared, torch.zeros(10)))
    assert list(cache) == ["x", "y"] and cache.nbytes == 6000 + 40 + 40  # "small" went; the shared one once


def test_cache_remeasures_values_that_grew():
    cache = ByteBudgetCache(budget_bytes=10_000)
    grows = {"t": torch.zeros(10)}
    cache.put("a", torch.zeros(1000))
    cache.put("grows", grows)
    assert cache.nbytes == 4040
    grows["u"] = torch.zeros(1600)  # +6400 bytes after it was stored (as kernels make operators on first use)
    assert cache.remeasure() == 6440 and list(cache) == ["grows"]


def test_cache_makes_room_before_a_build():
    cache = ByteBudgetCache(budget_bytes=10_000)
    for key in "abc":
        cache.put(key, torch.zeros(800))  # 3200 bytes each: 9600 in all
    assert cache.entry_nbytes("a") == 3200 and cache.entry_nbytes("zzz") == 0
    assert cache.make_room(3200) == 6400 and list(cache) == ["b", "c"]  # 6400 + 3200 fit
    assert cache.make_room(20_000) == 0 and len(cache) == 0  # more than the budget: everything goes


def test_cache_get_or_build_builds_once():
    cache = ByteBudgetCache(budget_bytes=1000)
    calls = []

    def build():
        calls.append(1)
        return torch.zeros(4)

    first = cache.get_or_build("k", build)
    assert cache.get_or_build("k", build) is first and len(calls) == 1


def test_budget_from_the_environment():
    assert cache_budget({}) == CACHE_BUDGET_BYTES == 1536 * MiB
    assert cache_budget({CACHE_BUDGET_ENV: "256"}) == 256 * MiB
    assert cache_budget({CACHE_BUDGET_ENV: " "}) == CACHE_BUDGET_BYTES
    for bad in ("lots", "-1", "nan"):
        with pytest.raises(ValueError, match=f"{CACHE_BUDGET_ENV}: expected a number of MiB >= 0, got '{bad}'"):
            cache_budget({CACHE_BUDGET_ENV: bad})
    with pytest.raises(ValueError, match="budget_bytes"):
        ByteBudgetCache(-1)


# ------------------------------------------------------------------------------------ freed memory
def rss() -> int:
    with open("/proc/self/status") as fh:
        return 1024 * next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def test_trim_heap_gives_freed_heap_memory_back():
    if not trim_heap():
        pytest.skip("this C library has no malloc_trim")
    x = torch.ones(24 * MiB, dtype=torch.uint8)
    del x  # freeing an mmapped block raises glibc's mmap threshold: the 2 MiB blocks below come from the heap
    blocks = [torch.ones(2 * MiB, dtype=torch.uint8) for _ in range(100)]
    top = blocks.pop()  # the block on top keeps free() from shrinking the heap by itself
    del blocks
    freed = rss()
    assert trim_heap()
    # measured: 199 of the 198 MiB freed went back (free() alone returned none of it)
    assert rss() < freed - 150 * MiB
    del top


# ------------------------------------------------------------------------------------ the real app
pytest.importorskip("streamlit", reason="the app extra is not installed (pip install -e .[app])")

APP = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")
TIMEOUT = 180
SIDE = 256  # the astronaut at 256 × 256: one kernels entry ≈ 40 MiB once used
BUDGET = 64 * MiB  # room for one or two entries: every new θ evicts
RERUNS = 24
RSS_MARGIN = 64 * MiB  # allowed above the budget: allocator noise and what lives outside the cache (see the test)


def test_a_rerun_leaves_no_tensors_to_the_cyclic_collector():
    """What a rerun computed is freed when it ends, by reference counting: nothing with a tensor waits in a
    reference cycle (the page's objects as script globals did: the globals dict and the script's functions
    reference each other, and Python's full collections are rare)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.sidebar.slider(key="work_size").set_value(64).run()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds goes to gc.garbage instead of being freed
    try:
        at.sidebar.slider(key="theta_beta").set_value(21.0).run()
        assert not at.exception
        gc.collect()
        cyclic = [o for o in gc.garbage if isinstance(o, torch.Tensor)]  # (arrays are not tracked by gc)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert not cyclic, f"{len(cyclic)} tensors in cyclic garbage, {tensor_nbytes(cyclic) / MiB:.1f} MiB"


def test_each_rerun_asks_to_trim_the_heap_above_its_limit(monkeypatch):
    from streamlit.testing.v1 import AppTest

    import lab.explore

    limits = []
    monkeypatch.setattr(lab.explore, "trim_heap_above", lambda limit: limits.append(limit) or False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.sidebar.slider(key="work_size").set_value(64).run()
    assert not at.exception and len(limits) >= 2  # each rerun (and each lattice build) asks
    budget = lab.explore.app_cache().budget_bytes
    assert set(limits) == {lab.explore.heap_limit(budget)}
    assert limits[0] >= budget + budget // 2  # the process's own memory on top of the cache's budget and half


def test_trim_heap_above_trims_only_over_the_limit(monkeypatch):
    from lab.explore import memory

    trims = []
    monkeypatch.setattr(memory, "trim_heap", lambda: trims.append(1) or True)
    now = memory.rss_bytes()
    assert now is not None and now > 0  # Linux: /proc/self/statm
    assert abs(now - rss()) < 64 * MiB  # the same figure as /proc/self/status's VmRSS
    assert not memory.trim_heap_above(now + 256 * MiB) and not trims
    assert memory.trim_heap_above(now // 2) and trims == [1]
    monkeypatch.setattr(memory, "rss_bytes", lambda: None)  # no RSS to read: trim, as before the limit existed
    assert memory.trim_heap_above(10**15) and trims == [1, 1]


def test_on_worker_runs_on_one_thread_and_passes_results_and_errors_back():
    import threading

    from lab.explore import on_worker

    seen = set()

    def where(x):
        seen.add(threading.get_ident())
        return x * 2

    callers = [threading.Thread(target=lambda i=i: on_worker(where, i)) for i in range(6)]
    for c in callers:
        c.start()
        c.join()
    assert on_worker(where, 21) == 42 and len(seen) == 1 and threading.get_ident() not in seen
    with pytest.raises(ZeroDivisionError):
        on_worker(lambda: 1 / 0)
    assert on_worker(lambda: on_worker(where, 3)) == 6  # a call from the worker runs at once, no deadlock


def test_rss_stays_bounded_while_theta_changes():
    """24 reruns, each with a new θβ or θα (a lattice pair the app has not built): the cache stays within its
    budget, and the process's RSS never rises more than BUDGET + RSS_MARGIN above its level after the first.

    Measured on the 2-core development machine at 256 × 256, largest rise over the first rerun's RSS:
    the byte-bounded cache (64 MiB budget) 33 and 53 MiB (two runs); with a leaking lattice build
    (lab/lattice/build.py at 584698b) 73 MiB; with an entry-count cache instead (st.cache_resource,
    max_entries=8, the page as script globals) 290 MiB, and 1250 MiB without the gc.collect() before each
    sample.
    """
    from streamlit.testing.v1 import AppTest

    cache = app_cache()
    saved = cache.budget_bytes
    cache.clear()
    cache.budget_bytes = BUDGET
    evicted = cache.evictions
    try:
        at = AppTest.from_file(APP, default_timeout=TIMEOUT)
        at.run()
        at.sidebar.slider(key="work_size").set_value(SIDE).run()
        assert not at.exception, at.exception
        samples = []
        for i in range(RERUNS):
            key, value = ("theta_beta", 14.0 + i) if i % 2 == 0 else ("theta_alpha", 60.0 + i)
            at.sidebar.slider(key=key).set_value(value).run()
            assert not at.exception, at.exception
            assert cache.nbytes <= BUDGET
            # small objects in cycles (figures, protos) move RSS by ~100 MiB between the collector's runs: collect
            # before sampling (that no tensor waits for the collector is the test above)
            gc.collect()
            samples.append(rss())
        growth = max(samples) - samples[0]
        print("RSS MiB per rerun:", [round(s / MiB) for s in samples], "growth", round(growth / MiB))
        assert growth < BUDGET + RSS_MARGIN, [f"{s / MiB:.0f}" for s in samples]
        assert cache.evictions > evicted  # the budget was what bounded it
        # the same θ again is a cache hit: the build time shown does not change
        before = {m.label: m.value for m in at.metric}["Lattice build (ms)"]
        at.sidebar.slider(key="w_bilateral").set_value(6.0).run()
        assert {m.label: m.value for m in at.metric}["Lattice build (ms)"] == before
    finally:
        cache.clear()
        cache.budget_bytes = saved
