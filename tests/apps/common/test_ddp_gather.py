"""apps.common.distributed: per-sample results gathered over a real two-process (gloo) group."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, DistributedSampler

from apps.common.distributed import SampleResults, dataloader_order, gather_samples

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Trainer:
    """The one attribute SampleResults reads from a Lightning trainer."""

    def __init__(self, loader: DataLoader) -> None:
        self.val_dataloaders = loader


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        results = {}
        # uneven counts: rank 0 has 3 rows, rank 1 has 1; index 4 is on both (a padding duplicate)
        index = {0: torch.tensor([4, 0, 2]), 1: torch.tensor([4])}[rank]
        results["uneven"] = gather_samples(index, {"value": index * 10.0, "pair": torch.stack([index, -index], 1)})
        # a rank with nothing still takes part
        empty = {0: torch.tensor([1, 3]), 1: torch.tensor([], dtype=torch.long)}[rank]
        results["empty"] = gather_samples(empty, {"value": empty.float()} if rank == 0 else {})
        # the DistributedSampler of an odd-sized set, read back through SampleResults
        data = torch.arange(7) * 100
        loader = DataLoader(data, batch_size=2, sampler=DistributedSampler(data, WORLD, rank, shuffle=False))
        collected = SampleResults()
        seen = []
        for batch in loader:
            seen.append(collected.next_indices(_Trainer(loader), "val", len(batch)))
            collected.add(value=batch)
        results["order"] = dataloader_order(loader)
        results["seen"] = torch.cat(seen)
        results["sampled"] = collected.gather(_Trainer(loader), "val")
        torch.save(results, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp_gather")
    mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, start_method="fork")
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_uneven_rows_are_gathered_once_each_and_sorted(ranks):
    for r in ranks:
        got = r["uneven"]
        assert got["index"].tolist() == [0, 2, 4]
        assert got["value"].tolist() == [0.0, 20.0, 40.0]
        assert got["pair"].tolist() == [[0, 0], [2, -2], [4, -4]]


def test_a_process_without_rows_still_gets_everything(ranks):
    for r in ranks:
        assert r["empty"]["index"].tolist() == [1, 3]
        assert r["empty"]["value"].tolist() == [1.0, 3.0]


def test_padding_of_the_distributed_sampler_is_dropped(ranks):
    # 7 samples on 2 processes: rank 0 gets 0 2 4 6, rank 1 gets 1 3 5 and 0 again as padding
    assert ranks[0]["order"].tolist() == [0, 2, 4, 6]
    assert ranks[1]["order"].tolist() == [1, 3, 5, 0]
    for r in ranks:
        assert torch.equal(r["seen"], r["order"])
        assert r["sampled"]["index"].tolist() == list(range(7))
        assert r["sampled"]["value"].tolist() == [i * 100 for i in range(7)]


def test_one_process_sorts_and_deduplicates():
    got = gather_samples(torch.tensor([3, 1, 3, 0]), {"v": torch.tensor([30.0, 10.0, 31.0, 0.0])})
    assert got["index"].tolist() == [0, 1, 3]
    assert got["v"].tolist() == [0.0, 10.0, 30.0]  # the first row of a repeated index is kept
    assert gather_samples(torch.tensor([], dtype=torch.long), {}) == {}


def test_one_process_sample_results_follow_the_loader():
    data = torch.arange(5)
    loader = DataLoader(data, batch_size=2)
    collected = SampleResults()
    for batch in loader:
        collected.add(v=batch.float(), twice=2 * batch)
    assert len(collected) == 5
    got = collected.gather(_Trainer(loader), "val")
    assert got["index"].tolist() == [0, 1, 2, 3, 4] and got["twice"].tolist() == [0, 2, 4, 6, 8]
    assert len(collected) == 0 and collected.gather(_Trainer(loader), "val") == {}


def test_bad_rows_are_refused():
    with pytest.raises(ValueError, match="rows"):
        gather_samples(torch.tensor([0, 1]), {"v": torch.zeros(3)})
    collected = SampleResults()
    with pytest.raises(ValueError, match="lengths"):
        collected.add(a=torch.zeros(2), b=torch.zeros(3))
    collected.add(a=torch.zeros(2))
    with pytest.raises(ValueError, match="differ"):
        collected.add(b=torch.zeros(2))
