"""The content-addressed cache of generated data sets (fedbench.runs.datacache)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from fedbench.runs import datacache
from fedbench.runs.build import _load_cached
from fedbench.api import load_dataset

SMALL = {"n_clients": 5, "n_test": 20, "dim": 4}


def _equal(a, b) -> None:
    for k in datacache.TENSORS:
        x, y = getattr(a, k), getattr(b, k)
        assert (x is None) == (y is None)
        if x is not None:
            assert torch.equal(x, y), k
    assert (a.task, a.num_classes) == (b.task, b.num_classes)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDBENCH_DATA_CACHE", str(tmp_path / "cache"))
    _load_cached.cache_clear()
    yield tmp_path / "cache"
    _load_cached.cache_clear()


def _generator(calls: list, seed: int = 1):
    from fedbench_plugins.datasets.synthetic import load

    def generate():
        calls.append(seed)
        return load(**{**SMALL, "noise": 0.1, "alpha": 0.4, "n_components": 2, "seed": seed})
    return generate


class TestCacheSuccess:
    def test_second_load_reads_the_entry_with_the_same_tensors(self, cache):
        calls = []
        first = datacache.cached("synthetic", (("seed", 1),), lambda: "code-a", _generator(calls))
        again = datacache.cached("synthetic", (("seed", 1),), lambda: "code-a", _generator(calls))
        assert calls == [1]  # generated once
        _equal(first, again)
        assert len(list(cache.glob("synthetic-*.pt"))) == 1

    def test_other_parameters_or_code_make_other_entries(self, cache):
        calls = []
        datacache.cached("synthetic", (("seed", 1),), lambda: "code-a", _generator(calls, 1))
        datacache.cached("synthetic", (("seed", 2),), lambda: "code-a", _generator(calls, 2))
        datacache.cached("synthetic", (("seed", 1),), lambda: "code-b", _generator(calls, 1))
        assert calls == [1, 2, 1]  # neither a parameter change nor a code change is a hit
        assert len(list(cache.glob("*.pt"))) == 3

    def test_load_dataset_through_the_registry_equals_a_fresh_generation(self, cache, monkeypatch):
        cached_run = load_dataset("synthetic", **SMALL)  # writes the entry
        _load_cached.cache_clear()
        hit = load_dataset("synthetic", **SMALL)  # reads it
        assert len(list(cache.glob("synthetic-*.pt"))) == 1
        monkeypatch.setenv("FEDBENCH_DATA_CACHE", "off")
        _load_cached.cache_clear()
        fresh = load_dataset("synthetic", **SMALL)
        _equal(cached_run, fresh)
        _equal(hit, fresh)

    def test_off_writes_nothing(self, cache, monkeypatch):
        monkeypatch.setenv("FEDBENCH_DATA_CACHE", "off")
        calls = []
        datacache.cached("synthetic", (), lambda: "c", _generator(calls))
        datacache.cached("synthetic", (), lambda: "c", _generator(calls))
        assert calls == [1, 1] and not cache.exists()


    def test_the_folder_is_bounded_and_the_least_recently_used_entry_goes_first(self, cache, monkeypatch):
        calls = []
        datacache.cached("synthetic", (("seed", 1),), lambda: "c", _generator(calls, 1))
        (first,) = cache.glob("*.pt")
        size = first.stat().st_size
        monkeypatch.setenv("FEDBENCH_DATA_CACHE_GB", str(2.5 * size / 1e9))  # room for two entries
        datacache.cached("synthetic", (("seed", 2),), lambda: "c", _generator(calls, 2))
        second = next(p for p in cache.glob("*.pt") if p != first)
        os.utime(first, (1, 1)), os.utime(second, (2, 2))  # first is the older...
        datacache.cached("synthetic", (("seed", 1),), lambda: "c", _generator(calls, 1))  # ...until a hit uses it
        datacache.cached("synthetic", (("seed", 3),), lambda: "c", _generator(calls, 3))
        assert calls == [1, 2, 3]  # the hit generated nothing
        left = set(cache.glob("*.pt"))
        assert first in left and second not in left and len(left) == 2  # the least recently used went

    def test_a_bound_below_one_entry_keeps_only_the_newest(self, cache, monkeypatch):
        monkeypatch.setenv("FEDBENCH_DATA_CACHE_GB", "0")
        calls = []
        datacache.cached("synthetic", (("seed", 1),), lambda: "c", _generator(calls, 1))
        datacache.cached("synthetic", (("seed", 2),), lambda: "c", _generator(calls, 2))
        (only,) = cache.glob("*.pt")
        datacache.cached("synthetic", (("seed", 2),), lambda: "c", _generator(calls, 2))
        assert calls == [1, 2]  # the newest entry survived its own eviction and is read back


class TestCacheFailure:
    def test_a_damaged_entry_is_regenerated_with_a_warning(self, cache):
        calls = []
        good = datacache.cached("synthetic", (), lambda: "c", _generator(calls))
        (entry,) = cache.glob("*.pt")
        # truncated, as by a disk fault; put in place by a rename, since `good` maps the old file: truncating a
        # file under its memory map kills the reader (SIGBUS), and fedbench never writes an entry in place
        damaged = entry.with_suffix(".bad")
        damaged.write_bytes(entry.read_bytes()[:100])
        os.replace(damaged, entry)
        with pytest.warns(UserWarning, match="could not be read"):
            again = datacache.cached("synthetic", (), lambda: "c", _generator(calls))
        assert calls == [1, 1]
        _equal(good, again)
        _equal(good, datacache._load(entry))  # rewritten whole

    def test_flipped_bits_with_the_size_and_zip_intact_are_found_and_regenerated(self, cache):
        calls = []
        good = datacache.cached("synthetic", (), lambda: "c", _generator(calls))
        (entry,) = cache.glob("*.pt")
        blob = bytearray(entry.read_bytes())
        start = blob.find(good.train_x.numpy().tobytes()[:64])
        assert start > 0
        for i in range(0, 2000 * 4, 4):  # one mantissa bit in each of 2,000 floats (as the test did)
            blob[start + i] ^= 0x01
        damaged = entry.with_suffix(".bad")
        damaged.write_bytes(bytes(blob))
        os.replace(damaged, entry)  # (a rename: `good` maps the old file)
        with pytest.warns(UserWarning, match="does not match its checksum.*train_x"):
            again = datacache.cached("synthetic", (), lambda: "c", _generator(calls))
        assert calls == [1, 1]  # regenerated, not read as it was
        _equal(good, again)
        _equal(good, datacache._load(entry))  # and rewritten whole

    def test_the_checksum_sees_one_bit_and_a_swap(self):
        x = torch.arange(1000, dtype=torch.float32)
        base = datacache.checksum(x)
        flipped = x.clone()
        flipped.view(torch.int32)[500] ^= 1
        swapped = x.clone()
        swapped[[3, 4]] = swapped[[4, 3]]
        assert datacache.checksum(flipped) != base and datacache.checksum(swapped) != base
        assert datacache.checksum(x.clone()) == base and datacache.checksum(x.view(10, 100)) != base  # shape counts
        assert datacache.checksum(torch.empty(0)) != datacache.checksum(torch.empty(0, dtype=torch.int64))

    def test_a_writer_killed_mid_write_leaves_no_entry(self, cache):
        calls = []
        generate = _generator(calls)
        cache.mkdir(parents=True)
        script = textwrap.dedent(f"""
            import os, torch
            from fedbench.runs import datacache
            from fedbench_plugins.datasets.synthetic import load
            real = torch.save
            def dying(obj, f, *a, **k):
                real(obj, f, *a, **k); f.flush(); os._exit(9)   # killed after writing, before the rename
            torch.save = dying
            datacache.cached("synthetic", (), lambda: "c", lambda: load(**{SMALL!r}, noise=0.1, alpha=0.4, n_components=2, seed=1))
        """)
        done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "FEDBENCH_DATA_CACHE": str(cache)})
        assert done.returncode == 9
        assert not list(cache.glob("*.pt")) and list(cache.glob("*.tmp"))  # only the temporary file is left
        datacache.cached("synthetic", (), lambda: "c", generate)
        assert calls == [1]  # the leftover was not taken for an entry
        (leftover,) = cache.glob("*.tmp")
        os.utime(leftover, (1, 1))  # an hour and more later, the next write deletes it
        fresh = cache / "synthetic-writing.pt.tmp"
        fresh.write_bytes(b"a writer at work")
        datacache.cached("synthetic", (("seed", 2),), lambda: "c", _generator(calls, 2))
        assert not leftover.exists() and fresh.exists()

    def test_two_processes_writing_the_same_entry_at_once_leave_one_readable_entry(self, cache):
        script = textwrap.dedent(f"""
            from fedbench.runs import datacache
            from fedbench_plugins.datasets.synthetic import load
            d = datacache.cached("synthetic", (), lambda: "c", lambda: load(**{SMALL!r}, noise=0.1, alpha=0.4, n_components=2, seed=1))
            print(float(d.train_x.sum()))
        """)
        env = {**os.environ, "FEDBENCH_DATA_CACHE": str(cache)}
        procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate()[0].strip() for p in procs]
        assert all(p.returncode == 0 for p in procs) and outs[0] == outs[1]
        (entry,) = cache.glob("*.pt")
        calls = []
        _equal(datacache._load(entry), _generator(calls)())

    def test_an_unwritable_cache_folder_warns_and_still_returns_the_data(self, tmp_path, monkeypatch):
        blocker = tmp_path / "file"
        blocker.write_text("not a folder")
        monkeypatch.setenv("FEDBENCH_DATA_CACHE", str(blocker / "cache"))
        calls = []
        with pytest.warns(UserWarning, match="could not write the data cache"):
            data = datacache.cached("synthetic", (), lambda: "c", _generator(calls))
        assert calls == [1] and data.n_clients == SMALL["n_clients"]


def _mapped_rss_kb(path) -> int:
    """Resident kB of this process's mappings of ``path`` (Linux /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                inside = line.rstrip("\n").endswith(str(path)) or line.rstrip("\n").endswith(f"{path} (deleted)")
            elif inside and head and head[0] == "Rss:":
                total += int(head[1])
    return total


def _big(calls: list):
    from fedbench.fl.data import FederatedData

    def generate():
        calls.append(1)
        g = torch.Generator().manual_seed(0)
        clients = [(torch.randn(n, 256, generator=g), torch.randint(0, 3, (n,), generator=g)) for n in (900, 1100)]
        tests = [(torch.randn(n, 256, generator=g), torch.randint(0, 3, (n,), generator=g)) for n in (2000, 2500)]
        return FederatedData.from_clients(clients, tests, task="multiclass", num_classes=3)
    return generate


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page release is Linux only")
class TestRelease:
    def test_read_pages_of_an_entry_leave_the_process_and_read_back_the_same(self, cache):
        data = datacache.cached("big", (), lambda: "code", _big([]))  # written, then loaded memory-mapped
        (entry,) = cache.glob("big-*.pt")
        want = data.test_x.clone()
        float(data.test_x.sum())  # every page read: resident
        before = _mapped_rss_kb(entry)
        assert before * 1024 >= data.test_x.numel() * 4 * 0.9
        released = datacache.release(data.test_x)
        assert released >= data.test_x.numel() * 4 - 2 * os.sysconf("SC_PAGE_SIZE")
        assert _mapped_rss_kb(entry) <= before - released // 1024 + 8  # those pages left the process
        assert torch.equal(data.test_x, want)  # and read back from the page cache unchanged
        assert _mapped_rss_kb(entry) * 1024 >= data.test_x.numel() * 4 * 0.9

    def test_anonymous_or_foreign_tensors_are_never_touched(self, cache, tmp_path):
        generated = _big([])()
        x = generated.test_x
        want = x.clone()
        assert datacache.release(x) == 0  # a generated tensor: madvise would zero it
        assert torch.equal(x, want)
        outside = tmp_path / "elsewhere.pt"
        torch.save({"x": want}, outside)
        mapped = torch.load(outside, mmap=True, weights_only=True)["x"]
        assert datacache.release(mapped) == 0  # a file, but not an entry of the cache
        assert torch.equal(mapped, want)
        assert datacache.release(want[:, ::2]) == 0  # not contiguous

    def test_a_run_streams_its_test_set_and_scores_as_without_release(self, cache, registry, monkeypatch):
        from fedbench.runs.build import build_simulation, resolve_run
        from fedbench.runs.runner import evaluate
        from tests.conftest import TINY

        cfg = resolve_run(registry, dataset="synthetic", method="fedem", seed=2, overrides={**TINY, "dataset.n_test": 3000})
        sim = build_simulation(registry, cfg)  # generated, written, loaded memory-mapped
        sim.aggregator.fit_round(0)
        (entry,) = cache.glob("synthetic-*.pt")
        released = []
        real = datacache.release
        monkeypatch.setattr(datacache, "release", lambda t: released.append(real(t)) or released[-1])
        got = evaluate(sim, 0)
        assert sum(released) > sim.data.test_x.numel() * 4 // 2  # the evaluation gave its test pages back
        assert _mapped_rss_kb(entry) * 1024 < sim.data.test_x.numel() * 4 // 2
        monkeypatch.setattr(datacache, "release", lambda t: 0)
        assert evaluate(sim, 0) == got
