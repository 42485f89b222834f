"""The app's memory: a cache bounded by the bytes it holds, and returning freed memory to the system.

Entries are measured (tensors, arrays and the sparse operators inside lattices and kernels, each storage
counted once) and evicted least-recently-used when the budget is exceeded; :func:`trim_heap` hands glibc's
retained pages back after a large build; :func:`on_worker` runs the big computations on one long-lived thread,
so that what one rerun frees is what the next one reuses.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

__all__ = [
    "CACHE_BUDGET_BYTES",
    "CACHE_BUDGET_ENV",
    "ByteBudgetCache",
    "app_cache",
    "array_key",
    "cache_budget",
    "heap_limit",
    "on_worker",
    "rss_bytes",
    "tensor_nbytes",
    "trim_heap",
    "trim_heap_above",
]

CACHE_BUDGET_BYTES = 3 * 2**29  # 1.5 GiB: what the app's cache (lattices, kernels, unaries) may hold
CACHE_BUDGET_ENV = "LAB_APP_CACHE_MIB"  # overrides CACHE_BUDGET_BYTES, in MiB (e.g. 512)


def cache_budget(environ: Mapping[str, str] | None = None) -> int:
    """The app cache's budget in bytes: ``$LAB_APP_CACHE_MIB`` MiB if set, else :data:`CACHE_BUDGET_BYTES`.

    Args:
        environ: where to read the variable (default ``os.environ``).

    Raises:
        ValueError: the variable is not a number ≥ 0.

    Example:
        >>> cache_budget({"LAB_APP_CACHE_MIB": "512"}) == 512 * 2**20
        True
    """
    environ = os.environ if environ is None else environ
    raw = environ.get(CACHE_BUDGET_ENV, "").strip()
    if not raw:
        return CACHE_BUDGET_BYTES
    try:
        mib = float(raw)
    except ValueError:
        mib = float("nan")
    if not mib >= 0:  # also refuses NaN
        raise ValueError(f"{CACHE_BUDGET_ENV}: expected a number of MiB >= 0, got {raw!r}")
    return int(mib * 2**20)


def _walk_bytes(obj: object, seen_storage: set, seen_obj: set) -> int:
    """Bytes of the tensor and array buffers reachable from ``obj`` that are not in ``seen_storage`` yet."""
    if isinstance(obj, torch.Tensor):
        if obj.layout in (torch.sparse_csr, torch.sparse_bsr):
            parts = (obj.crow_indices(), obj.col_indices(), obj.values())
        elif obj.layout in (torch.sparse_csc, torch.sparse_bsc):
            parts = (obj.ccol_indices(), obj.row_indices(), obj.values())
        elif obj.layout == torch.sparse_coo:
            parts = (obj._indices(), obj._values())
        elif obj.is_nested or obj.device.type == "meta":
            return 0
        else:
            storage = obj.untyped_storage()
            key = ("torch", obj.device, storage.data_ptr(), storage.nbytes())
            if key in seen_storage:
                return 0
            seen_storage.add(key)
            return storage.nbytes()
        return sum(_walk_bytes(p, seen_storage, seen_obj) for p in parts)
    if isinstance(obj, np.ndarray):
        root = obj
        while isinstance(root.base, np.ndarray):
            root = root.base
        key = ("numpy", root.__array_interface__["data"][0], root.nbytes)
        if key in seen_storage:
            return 0
        seen_storage.add(key)
        return root.nbytes
    if id(obj) in seen_obj:
        return 0
    seen_obj.add(id(obj))
    if isinstance(obj, Mapping):
        return sum(
            _walk_bytes(k, seen_storage, seen_obj) + _walk_bytes(v, seen_storage, seen_obj) for k, v in obj.items()
        )
    if isinstance(obj, (list, tuple, set, frozenset)):
        return sum(_walk_bytes(x, seen_storage, seen_obj) for x in obj)
    # the lab's own objects (lattices, kernels, traces, results): their attributes; anything else holds no tensors
    if dataclasses.is_dataclass(obj) or type(obj).__module__.split(".")[0] == "lab":
        fields = dict(vars(obj)) if hasattr(obj, "__dict__") else {}
        for cls in type(obj).__mro__:
            for slot in getattr(cls, "__slots__", ()):
                if hasattr(obj, slot):
                    fields[slot] = getattr(obj, slot)
        return sum(_walk_bytes(v, seen_storage, seen_obj) for v in fields.values())  # (no id of a temporary)
    return 0


def tensor_nbytes(*objs: object) -> int:
    """Bytes held by the tensors and NumPy arrays reachable from ``objs``, each buffer counted once.

    Followed: tuples, lists, sets, dicts, dataclasses and the attributes of the lab's own objects (a
    :class:`~lab.crf.CRFKernels`, its lattices and their cached sparse operators, a :class:`RunResult`).
    A strided tensor counts its whole storage (a view counts what it keeps alive); a sparse matrix its
    index and value tensors; an array its base buffer.

    Example:
        >>> x = torch.zeros(1000)
        >>> tensor_nbytes(x), tensor_nbytes((x, x[:10]))
        (4000, 4000)
    """
    seen_storage: set = set()
    seen_obj: set = set()
    return sum(_walk_bytes(obj, seen_storage, seen_obj) for obj in objs)


class ByteBudgetCache:
    """A least-recently-used cache bounded by the bytes its values hold, not by how many it holds.

    A value's size is :func:`tensor_nbytes` (tensors and arrays it references). The total counts a buffer
    shared by several values once (the spatial lattice of one θγ serves every θα, θβ). When the total passes
    the budget, the least recently used values go until it fits; a value that alone is over the budget is
    returned but not kept. Values that grow after they are stored (a lattice makes its sparse operators on
    first use) are measured again by :meth:`remeasure`; :meth:`make_room` evicts ahead of a build. Safe to share
    between threads (Streamlit sessions).

    Args:
        budget_bytes: the most the values may hold together, ≥ 0.

    Example:
        >>> cache = ByteBudgetCache(budget_bytes=6000)
        >>> cache.put("a", torch.zeros(1000)).shape, cache.nbytes
        (torch.Size([1000]), 4000)
        >>> _ = cache.put("b", torch.zeros(1000))  # 8000 > 6000: "a", the least recently used, goes
        >>> list(cache), cache.nbytes
        (['b'], 4000)
    """

    def __init__(self, budget_bytes: int) -> None:
        if int(budget_bytes) != budget_bytes or budget_bytes < 0:
            raise ValueError(f"budget_bytes: expected an integer >= 0, got {budget_bytes!r}")
        self.budget_bytes = int(budget_bytes)
        self._values: OrderedDict[Hashable, object] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.RLock()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._values

    def __iter__(self):
        with self._lock:
            return iter(list(self._values))

    @property
    def nbytes(self) -> int:
        """Bytes the cached values hold together (shared buffers once), as of the last put or remeasure."""
        return self._nbytes

    def get(self, key: Hashable, default: object = None) -> object:
        """The value for ``key`` (now the most recently used), or ``default``."""
        with self._lock:
            if key not in self._values:
                return default
            self._values.move_to_end(key)
            return self._values[key]

    def put(self, key: Hashable, value: object) -> object:
        """Store ``value`` as the most recently used, evict to fit the budget, and return ``value``."""
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            self._fit()
            return value

    def get_or_build(self, key: Hashable, build: Callable[[], object]) -> object:
        """The cached value for ``key``, else ``build()`` stored under it (built outside the lock)."""
        with self._lock:
            if key in self._values:
                return self.get(key)
        return self.put(key, build())

    def entry_nbytes(self, key: Hashable) -> int:
        """Bytes the value under ``key`` holds on its own (shared buffers included), 0 when it is not cached."""
        with self._lock:
            return tensor_nbytes(self._values[key]) if key in self._values else 0

    def make_room(self, nbytes: int) -> int:
        """Evict the least recently used values until ``nbytes`` more fit in the budget; the new total.

        Called before building a value of about that size, so that the old values and the one being built
        never hold more than the budget together (eviction after the build would come too late for the peak).
        """
        with self._lock:
            self._fit()
            while self._values and self._nbytes + nbytes > self.budget_bytes:
                self._values.popitem(last=False)
                self.evictions += 1
                self._nbytes = tensor_nbytes(*self._values.values())
            return self._nbytes

    def remeasure(self) -> int:
        """Measure the values again (they may have grown since they were stored), evict to fit; the new total."""
        with self._lock:
            self._fit()
            return self._nbytes

    def clear(self) -> None:
        """Drop every value."""
        with self._lock:
            self._values.clear()
            self._nbytes = 0

    def _fit(self) -> None:
        # a value over the whole budget alone would push everything else out and still not fit: drop it first
        for key in [k for k, v in self._values.items() if tensor_nbytes(v) > self.budget_bytes]:
            del self._values[key]
            self.evictions += 1
        self._nbytes = tensor_nbytes(*self._values.values())
        while self._nbytes > self.budget_bytes:
            self._values.popitem(last=False)
            self.evictions += 1
            self._nbytes = tensor_nbytes(*self._values.values())


@functools.cache
def app_cache() -> ByteBudgetCache:
    """The process-wide cache the app keeps its kernels and unaries in, budget :func:`cache_budget` (read once).

    One per server process, shared by all sessions (as ``st.cache_resource`` would be), and reachable from
    tests and benchmarks to inspect or clear.
    """
    return ByteBudgetCache(cache_budget())


def array_key(array: np.ndarray) -> tuple:
    """A hashable key for an array's content: shape, dtype and a BLAKE2 digest of its bytes (≈1 ms a MB).

    Example:
        >>> array_key(np.zeros((2, 3), np.uint8)) == array_key(np.zeros((2, 3), np.uint8))
        True
    """
    a = np.ascontiguousarray(array)
    return (a.shape, a.dtype.str, hashlib.blake2b(memoryview(a).cast("B"), digest_size=16).hexdigest())


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """The C library's ``malloc_trim`` (glibc), or None where it has none (macOS, musl, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def trim_heap() -> bool:
    """Give the heap memory that was freed back to the operating system (glibc's ``malloc_trim(0)``).

    glibc keeps freed blocks in its arenas for reuse, and tensors of a few MB to 32 MB come from those arenas
    once its adaptive mmap threshold has risen: after a lattice rebuild at 1 MP about 1 GiB of freed memory
    stayed resident in the app's server (measured: RSS fell by that much on a trim). The app calls this after
    each rerun; it takes a few ms.

    Returns:
        Whether a trim ran (False where the C library has no ``malloc_trim``).
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


_WORKER: ThreadPoolExecutor | None = None
_WORKER_IDENT: list[int] = []  # the worker thread's ident, once it has started
_WORKER_LOCK = threading.Lock()


def _note_worker() -> None:
    _WORKER_IDENT.append(threading.get_ident())


def on_worker(fn: Callable, /, *args, **kwargs):
    """``fn(*args, **kwargs)`` run on one long-lived thread of this process; its result, or its exception.

    Streamlit runs every rerun of a script on a new thread, and glibc gives a new thread a malloc arena of its
    own when the others are busy or new: the hundreds of MB one mean-field run frees (its buffers, an evicted
    run's maps) then sit in an arena the next rerun's thread does not allocate from, and the next run takes
    fresh pages from the kernel instead, faulting in every one. ``benchmarks/run_reuse.py`` replays the app's
    pattern (a fresh thread per run, results kept in the byte-budget cache) at 512² × 21 labels, T = 5: with a
    trim after every run, 405 ms a run (394 ms of it system time) on the calling threads against 169 ms on
    this worker; with the trim only above :func:`heap_limit`, 193 against 133 ms (2-core development machine,
    ``benchmarks/RESULTS.md``). The app therefore runs inference, lattice builds and the KL through this
    function.

    Calls from several threads run one at a time, in the order they came (the CPU path runs one inference at a
    time anyway); a call from the worker thread itself runs at once, so nesting cannot deadlock.

    Example:
        >>> on_worker(sum, [1, 2, 3])
        6
    """
    global _WORKER
    if threading.get_ident() in _WORKER_IDENT:
        return fn(*args, **kwargs)
    with _WORKER_LOCK:
        if _WORKER is None:
            _WORKER = ThreadPoolExecutor(1, thread_name_prefix="lab-compute", initializer=_note_worker)
        worker = _WORKER
    return worker.submit(fn, *args, **kwargs).result()


def rss_bytes() -> int | None:
    """This process's resident set size in bytes (Linux's ``/proc/self/statm``), or None where there is none."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@functools.cache
def _first_rss() -> int:
    return rss_bytes() or 0


def heap_limit(budget: int | None = None) -> int:
    """The RSS above which the app hands freed memory back: the RSS when first asked + the budget + half of it.

    Below it, memory a rerun freed stays with the allocator and the next run reuses it, instead of faulting in
    fresh pages: replaying the app's pattern at 512² × 21 labels (``benchmarks/run_reuse.py``), a trim after
    every run cost 394 ms of system time per run, against 62 ms when trimming only above this limit on
    :func:`on_worker`'s thread (``benchmarks/RESULTS.md``). The first call fixes the baseline; the
    app first asks at the end of its first rerun (or after its first lattice build), once its libraries and
    models are loaded.

    Args:
        budget: the cache's budget in bytes (default :func:`cache_budget`).
    """
    budget = cache_budget() if budget is None else budget
    return _first_rss() + budget + budget // 2


def trim_heap_above(limit: int) -> bool:
    """:func:`trim_heap` when this process's RSS exceeds ``limit`` bytes (or cannot be read); whether it trimmed."""
    rss = rss_bytes()
    if rss is not None and rss <= limit:
        return False
    return trim_heap()
