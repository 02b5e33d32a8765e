"""`peak_mem_bytes`: each epoch's peak, measured (docs/design.md "Peak memory"): an allocation inside an epoch
shows in that epoch's figure and not in the next one's; every row holds it; the dashboard and `deqlab export` offer
it in MiB."""

import pytest
import torch
from study_factory import TINY

from deqlab.cli import main
from deqlab.report import figures as figs
from deqlab.report.tables import metric_candidates
from deqlab.results import TrialWriter, load
from deqlab.run import TrainConfig, train
from deqlab.run.memory import PeakMemory

MB = 2**20


def _epoch(memory: PeakMemory, allocate: int, device="cpu") -> float:
    memory.start()
    if allocate:
        block = torch.ones(allocate // 4, dtype=torch.float32, device=device)  # written: resident, not just mapped
        del block
    return memory.read()


def test_cpu_peak_is_the_epochs_own_and_resets():
    memory = PeakMemory(torch.device("cpu"))
    quiet = _epoch(memory, 0)
    busy = _epoch(memory, 256 * MB)
    after = _epoch(memory, 0)
    assert memory.source == "rss_epoch"  # Linux: the high-water mark reset every epoch
    assert busy - quiet >= 250 * MB  # the 256 MiB block, seen although freed before the read
    assert after < busy - 200 * MB  # and gone from the next epoch's figure


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_is_max_memory_allocated_of_the_epoch():
    device = torch.device("cuda")
    memory = PeakMemory(device)
    quiet = _epoch(memory, 0, device)
    busy = _epoch(memory, 256 * MB, device)
    after = _epoch(memory, 0, device)
    assert busy - quiet == 256 * MB  # the allocator's bytes exactly
    assert after == quiet


def test_every_row_holds_the_peak_and_the_dashboard_and_export_offer_it_in_mib(tmp_path, capsys, monkeypatch):
    config = TrainConfig.model_validate({**TINY, "device": "cpu"})
    writer = TrialWriter(str(tmp_path), "mem", "t0", config.flat_params(), {"seed": 0})
    history = train(config, writer=writer).history
    rows = load(str(tmp_path / "mem")).trials.sort_values("epoch")
    assert rows.peak_mem_bytes.tolist() == [m["peak_mem_bytes"] for m in history]
    assert (rows.peak_mem_bytes > 50 * MB).all()  # the process's resident set: torch alone is more than this
    # the dashboard's metric choices and axes (deqlab.report: what its pages call)
    assert "peak_mem_bytes" in metric_candidates(rows)
    assert figs.axis_title("peak_mem_bytes") == "Peak memory (MiB)"
    assert figs.in_display_units(rows)["peak_mem_bytes"].tolist() == pytest.approx((rows.peak_mem_bytes / MB).tolist())
    monkeypatch.chdir(tmp_path)
    assert main(["export", "mem", "--metrics", "peak_mem_bytes", "--by", "seed"]) == 0
    assert "| Peak memory (MiB) ↓ |" in capsys.readouterr().out  # label, unit and direction from the catalogue
    assert main(["export", "mem", "--metrics", "peak_mem_bytes", "--by", "seed", "--format", "csv"]) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]  # the final epoch's, in MiB (CSV: 6 significant digits)
    exported = dict(zip(header.split(","), row.split(",")))
    assert exported["n"] == "1"
    final_mib = rows.peak_mem_bytes.iloc[-1] / MB
    assert float(exported["peak_mem_bytes_MiB_mean"]) == pytest.approx(final_mib, rel=1e-5)
