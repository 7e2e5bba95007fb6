"""Clients' lasting state (momentum buffers, personal models) kept in files: the same numbers as in memory."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedbench.runs.build import build_simulation, resolve_run
from fedbench.runs import client_state
from fedbench.runs.client_state import DiskSlots, ScratchFolder, choose, file_system
from fedbench.errors import ConfigError
from tests.conftest import TINY


def test_disk_slots_give_back_what_was_put_and_the_folder_goes_with_its_last_user(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDBENCH_STATE_DIR", str(tmp_path))
    folder = ScratchFolder()
    slots = DiskSlots(folder, "client0", {"main": [torch.arange(3.0), None]})
    value = [torch.tensor([1.5, -2.0]), torch.tensor([[7.0]])]
    slots["personal"] = value
    assert sorted(slots) == ["main", "personal"] and len(slots) == 2
    assert all(torch.equal(a, b) for a, b in zip(slots["personal"], value))
    assert slots["main"][1] is None and torch.equal(slots["main"][0], torch.arange(3.0))
    assert slots.get("other") is None
    assert len(list(folder.path.iterdir())) == 2  # nothing but the names in memory
    del slots["main"]
    assert len(list(folder.path.iterdir())) == 1
    slots["again"] = [torch.tensor([9.0])]  # a new key after a delete takes a file of its own
    assert all(torch.equal(a, b) for a, b in zip(slots["personal"], value)) and float(slots["again"][0]) == 9.0
    del slots["again"]
    path = folder.path
    del folder, slots
    gc.collect()
    assert not path.exists()


@pytest.mark.parametrize("method, engine", [("fedavg", "vectorized"), ("ditto", "vectorized"), ("fedem", "sequential"),
                                            ("pfedme-moreau", "sequential")])
def test_a_run_with_client_state_on_disk_computes_the_same_numbers(registry, tmp_path, monkeypatch, method, engine):
    monkeypatch.setenv("FEDBENCH_STATE_DIR", str(tmp_path))
    over = {**TINY, "rounds": 3, "participation": 0.5}
    sims = [build_simulation(registry, resolve_run(registry, dataset="synthetic", method=method, seed=1, overrides=over,
                                                   engine=engine, client_state=state))
            for state in ("memory", "disk")]
    assert sims[1].engine.endswith("client state on disk (asked for: client_state=disk)"), sims[1].engine
    assert sims[1].engine.startswith(engine) and "client state in memory (asked for" in sims[0].engine
    mem, disk = sims[0].aggregator, sims[1].aggregator
    for r in range(3):
        assert mem.fit_round(r).train_loss == disk.fit_round(r).train_loss
    for a, b in zip(mem.global_params, disk.global_params):
        assert torch.equal(a, b)
    for c, d in zip(mem.clients, disk.clients):
        assert sorted(c.kept) == sorted(d.kept) and sorted(c.kept_momentum) == sorted(d.kept_momentum)
        for key in c.kept_momentum:
            assert all(torch.equal(x, y) for x, y in zip(c.kept_momentum[key], d.kept_momentum[key]) if x is not None)
    assert [(e.test_loss, e.test_acc) for e in mem.evaluate()] == [(e.test_loss, e.test_acc) for e in disk.evaluate()]
    (folder,) = tmp_path.iterdir()
    assert any(folder.iterdir())  # the state is there, not in memory
    del sims, mem, disk, c, d
    gc.collect()
    assert not folder.exists()


def test_an_unknown_place_is_refused_before_any_run(registry):
    with pytest.raises(ConfigError, match="client_state must be one of auto, memory, disk"):
        resolve_run(registry, dataset="synthetic", method="fedavg", seed=0, client_state="gpu")


def test_auto_puts_the_state_in_files_only_where_one_client_at_a_time_trains_and_it_could_pass_the_budget(tmp_path,
                                                                                                       monkeypatch):
    monkeypatch.setenv("FEDBENCH_STATE_DIR", str(tmp_path))
    mb = 2**20
    monkeypatch.setattr(client_state, "memory_budget", lambda: 256 * mb)
    share = "256 MB (this run's share of the memory)"
    assert choose("auto", True, 80, 9 * mb) == (True, f"auto: 80 clients x 9.0 MB over {share}, files under {tmp_path}")
    assert choose("auto", True, 20, 9 * mb) == (False, f"auto: 20 clients x 9.0 MB within {share}")
    assert choose("auto", True, 256, mb)[0] is False and choose("auto", True, 257, mb)[0] is True  # 256 MB is in
    on_disk, why = choose("auto", False, 800, 9 * mb)
    assert not on_disk and "vectorized engine" in why
    assert choose("memory", True, 800, 9 * mb) == (False, "asked for: client_state=memory")
    assert choose("disk", False, 1, 1) == (True, "asked for: client_state=disk")


def test_the_budget_is_this_runs_share_of_the_machines_memory(monkeypatch):
    gb = 2**30
    monkeypatch.setattr(client_state, "_runs_at_once", [1])
    monkeypatch.setattr(client_state, "memory_bytes", lambda: 24 * gb)
    assert client_state.memory_budget() == 3 * gb  # an eighth of 24 GB: EMNIST's 100 x 8.7 MB stay in memory
    client_state.set_runs_at_once(4)  # a worker of --jobs 4
    assert client_state.memory_budget() == 3 * gb // 4
    client_state.set_runs_at_once(1000)  # never under the floor
    assert client_state.memory_budget() == client_state.MEMORY_BUDGET_MIN
    client_state.set_runs_at_once(0)  # nonsense counts as one run
    assert client_state.memory_budget() == 3 * gb
    monkeypatch.setattr(client_state, "memory_bytes", lambda: None)  # a machine that does not say
    assert client_state.memory_budget() == client_state.MEMORY_BUDGET_MIN


def test_each_worker_of_a_sweep_gets_its_share_of_the_budget(registry, tmp_path):
    from fedbench.fl.memory import memory_bytes
    from fedbench.runs.executor import run_local

    cfgs = [resolve_run(registry, dataset="synthetic", method="fedavg", seed=s, overrides={**TINY, "rounds": 1},
                        engine="sequential") for s in (1, 2)]
    outcomes = run_local(cfgs, tmp_path / "r.sqlite", jobs=2, progress=False)
    budget = max(client_state.MEMORY_BUDGET_MIN, int(memory_bytes() * client_state.MEMORY_SHARE / 2))
    for o in outcomes:
        assert o.status == "done", o.error
        assert f"within {budget / 2**20:,.0f} MB (this run's share of the memory)" in o.engine, o.engine


def test_the_file_system_is_read_from_the_mount_table():
    assert file_system(Path("/proc/self")) == "proc"
    assert file_system(Path("/")) != ""


@pytest.mark.skipif(file_system(Path("/dev/shm")) != "tmpfs", reason="no tmpfs at /dev/shm here")
def test_auto_keeps_memory_when_the_folder_is_memory_itself(monkeypatch):
    monkeypatch.setenv("FEDBENCH_STATE_DIR", "/dev/shm/fedbench-test")
    monkeypatch.setattr(client_state, "memory_budget", lambda: 256 * 2**20)
    on_disk, why = choose("auto", True, 80, 9 * 2**20)
    assert not on_disk and "/dev/shm/fedbench-test is tmpfs (memory)" in why and "FEDBENCH_STATE_DIR" in why


def test_auto_on_a_run_over_the_budget_keeps_the_clients_state_in_files(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("FEDBENCH_STATE_DIR", str(tmp_path))
    monkeypatch.setattr(client_state, "memory_budget", lambda: 100)  # bytes: the tiny model's clients pass it
    sim = build_simulation(registry, resolve_run(registry, dataset="synthetic", method="fedavg", seed=1,
                                                 overrides={**TINY, "rounds": 1}, engine="sequential"))
    assert sim.config.client_state == "auto" and "client state on disk (auto: " in sim.engine, sim.engine
    sim.aggregator.fit_round(0)
    (folder,) = tmp_path.iterdir()
    assert len(list(folder.iterdir())) == len(sim.aggregator.clients)  # each client's momentum, in a file
    vec = build_simulation(registry, resolve_run(registry, dataset="synthetic", method="fedavg", seed=1,
                                                 overrides={**TINY, "rounds": 1}, engine="vectorized"))
    assert "client state in memory (auto: the vectorized engine" in vec.engine


def test_a_folder_left_by_a_killed_run_goes_when_the_next_run_makes_one(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDBENCH_STATE_DIR", str(tmp_path))
    code = ("from fedbench.runs.client_state import ScratchFolder, DiskSlots; import os, torch; f = ScratchFolder(); "
            "DiskSlots(f, 'c0', {'main': [torch.ones(3)]}); print(f.path, flush=True); os.kill(os.getpid(), 9)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == -9
    left = Path(run.stdout.split()[0])
    assert left.exists() and any(left.iterdir())  # killed: its finaliser never ran
    other_host = tmp_path / f"{ScratchFolder.PREFIX}elsewhere-1-abc"  # another machine's, on a shared disk
    other_host.mkdir()
    live = ScratchFolder()
    assert not left.exists() and other_host.exists() and live.path.exists()
    assert ScratchFolder().path.exists() and live.path.exists()  # a live process's folder stays
