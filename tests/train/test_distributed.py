"""train.distributed: the shard arithmetic alone, then the helpers in two real gloo processes started by
torch's elastic agent (through train.launch), checked against one plain process."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from pixclass.data.cache import cache_dir
from pixclass.data.dataset import DataConfig
from pixclass.errors import ConfigError, DataError, DeviceError, RunError
from pixclass.train import distributed
from pixclass.train.launch import launch


# ------------------------------------------------------------------------------- shard arithmetic
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_the_ranks_take_every_row_of_each_global_batch_once(world_size: int) -> None:
    order = distributed.epoch_order(50, seed=3, epoch=1)
    shards = [distributed.shard_batches(order, 12, r, world_size) for r in range(world_size)]
    assert all(s.shape == (50 // 12, 12 // world_size) for s in shards)
    for step in range(50 // 12):  # global batch `step` is the union of the ranks' parts, in rank order
        assert torch.equal(torch.cat([s[step] for s in shards]), order[step * 12 : (step + 1) * 12])
    taken = torch.cat([s.flatten() for s in shards])
    assert len(set(taken.tolist())) == len(taken) == 48  # once each; the ragged 2 rows are dropped


def test_the_global_order_depends_on_seed_and_epoch_only() -> None:
    a = distributed.epoch_order(100, seed=0, epoch=2)
    assert torch.equal(a, distributed.epoch_order(100, seed=0, epoch=2))
    assert sorted(a.tolist()) == list(range(100))
    assert not torch.equal(a, distributed.epoch_order(100, seed=0, epoch=3))
    assert not torch.equal(a, distributed.epoch_order(100, seed=1, epoch=2))


def test_rank_generators_differ_by_rank_and_repeat_by_epoch() -> None:
    draw = [torch.rand(4, generator=distributed.rank_generator(0, 1, r)) for r in (0, 1)]
    assert not torch.equal(draw[0], draw[1])
    assert torch.equal(draw[1], torch.rand(4, generator=distributed.rank_generator(0, 1, 1)))


def test_a_global_batch_that_does_not_split_evenly_is_a_config_error() -> None:
    assert distributed.per_rank_batch(256, 4) == 64
    with pytest.raises(ConfigError, match="--batch-size 10 is the global batch.*multiple of the 4"):
        distributed.per_rank_batch(10, 4)
    with pytest.raises(ConfigError):
        distributed.per_rank_batch(1, 2)


def test_shard_rows_split_evaluation_rows_without_overlap() -> None:
    parts = [distributed.shard_rows(11, r, 3) for r in range(3)]
    assert [len(p) for p in parts] == [4, 4, 3]
    assert [i for p in parts for i in p] == list(range(11))


# ------------------------------------------------------------------------------- one plain process
def test_without_a_process_group_the_helpers_are_identities() -> None:
    assert not distributed.launched_by_torchrun({})
    world = distributed.setup("cpu")
    assert world == distributed.World() and world.is_main and not world.distributed
    assert distributed.is_main()
    distributed.barrier()
    with distributed.main_first():
        pass
    assert distributed.sum_counts(torch.tensor(2.5), 3, 4.0) == [2.5, 3.0, 4.0]
    assert distributed.broadcast_object({"stop": True}) == {"stop": True}
    assert distributed.on_main(lambda x: x + 1, 1) == 2
    model = nn.Linear(2, 2)
    assert distributed.wrap_model(model, world) is model
    assert distributed.unwrap(model) is model


def test_sync_bn_on_cpu_is_a_config_error_naming_the_flag() -> None:
    with pytest.raises(ConfigError, match="--sync-bn: .*only on CUDA"):
        distributed.wrap_model(nn.BatchNorm2d(2), distributed.World(), sync_bn=True)


def test_every_local_rank_gets_its_own_gpu_or_all_use_the_cpu() -> None:
    pick = distributed._pick_device
    assert pick("auto", 1, 2, gpus=2) == torch.device("cuda", 1)
    assert pick("cuda:0", 1, 2, gpus=2) == torch.device("cuda", 1)  # the local rank's GPU, whatever N
    assert pick("auto", 0, 2, gpus=1) == torch.device("cpu")  # not one each: gloo for all, not a mix
    assert pick("cpu", 0, 2, gpus=2) == torch.device("cpu")
    with pytest.raises(DeviceError, match="2 processes on this machine but 1 GPU"):
        pick("cuda", 0, 2, gpus=1)
    with pytest.raises(DeviceError, match="no CUDA device"):
        pick("cuda", 0, 1, gpus=0)


def test_a_malformed_torchrun_variable_is_a_run_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "zero")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RunError, match="RANK='zero' is not an integer"):
        distributed.setup("cpu")


def test_a_taken_master_port_is_a_one_line_run_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 0 hosts the store on MASTER_PORT when no agent does (workers started by hand, or a launcher
    that does not host it); a port in use says so instead of a c10d traceback."""
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        port = s.getsockname()[1]
        for k, v in {
            "RANK": "0",
            "WORLD_SIZE": "2",
            "LOCAL_RANK": "0",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
        with pytest.raises(RunError, match=f"^rank 0: port 127.0.0.1:{port} is taken .*--master-port"):
            distributed.setup("cpu", timeout_s=10)
    assert not dist.is_initialized()


# ---------------------------------------------------------------------------- two gloo processes
def _net() -> nn.Module:
    """No BatchNorm: the per-rank statistics would make 2 x B/2 differ from B (that is what --sync-bn is for)."""
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _one_sgd_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(21, 1, 8, 8, generator=g), torch.randint(0, 3, (21,), generator=g)


def _two_rank_worker(tmp: str, folder: str, state: dict[str, torch.Tensor]) -> dict:
    """Runs in each of 2 spawned processes; rank 0 returns what the tests check."""
    with distributed.worker("cpu") as world:
        marker = Path(tmp) / "rank0-was-here"
        with distributed.main_first():
            if world.is_main:
                marker.write_text("0")
            first_ok = marker.exists()  # rank 1 enters only after rank 0 left the block
        counts = distributed.sum_counts(torch.tensor(1.5 * (world.rank + 1)), world.rank + 2)
        decision = distributed.broadcast_object("stop" if world.is_main else "go on")
        bn = nn.BatchNorm1d(2)
        bn.running_mean.fill_(float(world.rank))
        distributed.sync_buffers(bn)

        # The cache: decoded by rank 0 alone; over the RAM limit (0 bytes), so memory-mapped in both.
        manifest = Path(tmp) / "split_manifest.json"
        ds = distributed.load_data_once(
            folder, DataConfig(image_size=8, workers=1, ram_limit=0), manifest, False
        )
        npy = sorted(cache_dir().glob("*.npy"))
        decoded_at = distributed.broadcast_object([p.stat().st_mtime_ns for p in npy])
        train = ds.splits["train"]

        x, y = _data()
        model = _net()
        model.load_state_dict(state)
        ddp = distributed.wrap_model(model, world)
        rows = distributed.shard_batches(distributed.epoch_order(len(x), 0, 0), 8, world.rank, world.size)[0]
        _one_sgd_step(ddp, x[rows], y[rows])
        mine = {
            "rank": world.rank,
            "first_ok": first_ok,
            "decision": decision,
            "bn_mean": bn.running_mean.tolist(),
            "rows": rows.tolist(),
            "memory_mapped": not train.store.in_memory,
            "train_labels": train.labels.tolist(),
            "npy_unchanged": [p.stat().st_mtime_ns for p in npy] == decoded_at,
        }
        gathered: list = [None] * world.size
        dist.all_gather_object(gathered, mine)
        return {
            "world": (world.rank, world.size, world.backend),
            "counts": counts,
            "ranks": sorted(gathered, key=lambda r: r["rank"]),
            "npy_files": len(npy),
            "params": {k: v.detach().clone() for k, v in distributed.unwrap(ddp).state_dict().items()},
        }


@pytest.mark.numerics
@pytest.mark.distributed
def test_two_gloo_ranks_share_counts_decisions_the_cache_and_one_step(tmp_path: Path) -> None:
    """One launch of two processes (each start costs seconds), checked in three parts."""
    from conftest import make_class_folder

    folder = make_class_folder(tmp_path / "data", {"a": 6, "b": 6}, size=10)
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in _net().state_dict().items()}
    out = launch(_two_rank_worker, (str(tmp_path), str(folder), state), nproc=2)  # the cache env is inherited
    _check_group(out)
    _check_cache_decoded_once(out, tmp_path)
    _check_step_equals_one_process_on_the_whole_batch(out, state)


def _check_group(out: dict) -> None:
    assert out["world"] == (0, 2, "gloo")
    assert out["counts"] == [1.5 + 3.0, 2 + 3]  # summed over the ranks
    assert all(r["first_ok"] for r in out["ranks"])
    assert [r["decision"] for r in out["ranks"]] == ["stop", "stop"]  # rank 0's decision everywhere
    assert [r["bn_mean"] for r in out["ranks"]] == [[0.0, 0.0], [0.0, 0.0]]  # rank 0's buffers everywhere


def _check_cache_decoded_once(out: dict, tmp: Path) -> None:
    assert out["npy_files"] == 1
    assert all(r["npy_unchanged"] for r in out["ranks"])  # rank 1 opened rank 0's file, did not rewrite it
    assert all(r["memory_mapped"] for r in out["ranks"])
    assert out["ranks"][0]["train_labels"] == out["ranks"][1]["train_labels"]  # the same split
    assert (tmp / "split_manifest.json").is_file()


def _check_step_equals_one_process_on_the_whole_batch(out: dict, state: dict[str, torch.Tensor]) -> None:
    r0, r1 = (set(r["rows"]) for r in out["ranks"])
    assert len(r0) == len(r1) == 4 and not r0 & r1  # disjoint halves of the global batch
    # The reference: one process, one step on the whole global batch of 8.
    x, y = _data()
    batch = distributed.epoch_order(len(x), 0, 0)[:8]
    assert set(batch.tolist()) == r0 | r1
    ref = _net()
    ref.load_state_dict(state)
    _one_sgd_step(ref, x[batch], y[batch])
    for k, v in ref.state_dict().items():
        # One SGD step: the all-reduced gradient sums the two halves in another order than one process
        # does (float32 rounding, ~1e-7 relative), times lr; 1e-5 / 1e-6 is 100x that and far below a
        # wrong average (a factor of 2) or a half-batch step.
        torch.testing.assert_close(out["params"][k], v, rtol=1e-5, atol=1e-6)
        assert not torch.equal(v, state[k])  # the step moved every parameter


def _failing_worker() -> None:
    with distributed.worker("cpu") as world:
        if world.rank == 1:
            raise DataError("photos/: no class folders")
        distributed.barrier()  # rank 0 waits for a peer that never comes; the agent stops it


@pytest.mark.distributed
def test_a_failing_rank_stops_the_job_with_its_error_in_one_line() -> None:
    with pytest.raises(RunError) as e:
        launch(_failing_worker, (), nproc=2, run_hint=lambda: "continue with --resume")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("rank 1 of 2 (pid ")
    assert (
        "failed: DataError: photos/: no class folders; the other processes were stopped; continue with --resume"
        in msg
    )
