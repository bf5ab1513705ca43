"""DDP on the CPU (trainer=ddp_sim: 2 processes over gloo), run as users run it, through the entry point: every
finetune strategy trains, rank 0 alone writes, the test covers every validation image once and equals a
single-process eval of the same checkpoint; cross-validation fits every fold in the same ranks; sweeps refuse the
script-relaunching launcher and run with spawn; SIGTERM to any rank stops every rank at one batch and resume=
continues exactly. Slow: each run starts several processes."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
from omegaconf import OmegaConf

from image_transfer import PROJECT_ROOT
from image_transfer import train as train_module
from image_transfer.eval import evaluate
from tests.helpers.configs import compose_config, run_entry_point
from tests.helpers.files import metrics_without_timings, read_csv

pytestmark = pytest.mark.slow

# timm's test_efficientnet (stages, BatchNorm) from scratch, 32 px, on the made-up images.
SMALL = ["trainer=ddp_sim", "model.backbone=timm/test_efficientnet", "model.pretrained=false", "model.image_size=32"]


def run(*overrides: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "image_transfer.train", *overrides]
    return subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, check=check, timeout=600, **kwargs)


def names_tested(run_dir) -> list[str]:
    return [row["image_names"] for row in read_csv(run_dir / "test_predictions.csv")]


# Each strategy trains in DDP somewhere in this file: gradual (with EMA) in its own run, frozen and freeze_unfreeze (the
# default, unfreezing in its last epoch) as the two jobs of the sweep with spawn, full in cross-validation. Every rank
# process costs seconds of imports.
EPOCHS = "trainer.max_epochs=3"
GRADUAL_EMA = ["finetune=gradual", "finetune.unfreeze_at_epochs=[1,2]", "callbacks=ema"]  # 2 unfreezes, EMA
SWEPT = ["finetune=frozen,freeze_unfreeze", "data.augment=none"]  # frozen: each rank reads the one feature cache entry


@pytest.fixture(scope="module")
def strategy_run(made_up_data, tmp_path_factory) -> Callable[[str], Path]:
    """The run dir of a strategy's DDP run, trained on first use: the SIGTERM test's killed and resumed run must end
    as gradual_ema's uninterrupted one; the sweep's jobs are frozen's and freeze_unfreeze's."""
    runs, data = {}, f"data.root={made_up_data.root}"

    def run_dir(strategy: str) -> Path:
        if strategy in runs:
            return runs[strategy]
        if strategy == "gradual_ema":
            runs[strategy] = tmp_path_factory.mktemp(strategy) / "run"
            run(*SMALL, data, EPOCHS, *GRADUAL_EMA, f"hydra.run.dir={runs[strategy]}")
        else:
            sweep = tmp_path_factory.mktemp("sweep")
            run("-m", *SMALL, data, EPOCHS, *SWEPT, "trainer.strategy.start_method=spawn", f"hydra.sweep.dir={sweep}")
            runs.update(frozen=sweep / "0", freeze_unfreeze=sweep / "1")
        return runs[strategy]

    return run_dir


@pytest.mark.parametrize("strategy", ["frozen", "freeze_unfreeze", "gradual_ema"])
def test_finetune_strategies_train_and_test_every_image_once(made_up_data, strategy_run, tmp_path, strategy):
    run_dir, data = strategy_run(strategy), f"data.root={made_up_data.root}"
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").finetune.strategy == strategy.removesuffix("_ema")
    validated = [row["image_names"] for row in read_csv(run_dir / "val_split.csv")]
    assert sorted(names_tested(run_dir)) == sorted(validated) and len(set(validated)) == len(validated)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["best_ckpt"].endswith("best.ckpt") and metrics["device"][:4] == "2 x "
    assert "metrics written" in (run_dir / "train.log").read_text()
    if strategy == "gradual_ema":  # started by popen, rank 1 has its own log: it trained too, but wrote no outputs
        assert "metrics written" not in (run_dir / "train_ddp_process_1.log").read_text()
    single = evaluate(compose_config("eval", tmp_path / "eval", [f"ckpt_path={metrics['best_ckpt']}", data]))
    assert single["test/acc"] == metrics["test/acc"]
    assert single["test/loss"] == pytest.approx(metrics["test/loss"], abs=1e-6)
    # eval given the DDP trainer tests on one device as well: every image once, the same metrics.
    ddp_eval = [f"ckpt_path={metrics['best_ckpt']}", data, "trainer=ddp_sim"]
    assert evaluate(compose_config("eval", tmp_path / "eval_ddp", ddp_eval)) == single
    assert sorted(names_tested(tmp_path / "eval_ddp")) == sorted(validated)


class RankZeroEndsLate(L.Callback):
    """Rank 0 ends each fit a second after the others (as with a slow disk under its checkpoint)."""

    def on_fit_end(self, trainer, pl_module):
        if trainer.global_rank == 0:
            time.sleep(1)


def test_cross_validation_fits_every_fold_in_the_same_ranks(made_up_data, tmp_path):
    # The ranks live on from one fold's fit to the next: each fit's process group must give way to the next one's,
    # even to a rank that reaches the next fold first.
    run_dir = tmp_path / "run"
    run(
        *SMALL,
        f"data.root={made_up_data.root}",
        "finetune=full",
        "trainer.max_epochs=1",
        "data.folds=2",
        "+callbacks.late._target_=tests.test_ddp.RankZeroEndsLate",
        f"hydra.run.dir={run_dir}",
    )
    predicted = [row["image_names"] for row in read_csv(run_dir / "oof_predictions.csv")]
    validated = [row["image_names"] for fold in (0, 1) for row in read_csv(run_dir / f"fold_{fold}" / "val_split.csv")]
    assert sorted(predicted) == sorted(validated) and len(set(predicted)) == made_up_data.rows
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["fold_ckpts"]) == 2 and metrics["device"].startswith("2 x ")


def test_a_sweep_refuses_ddp_that_relaunches_the_script_and_runs_with_spawn(
    made_up_data, strategy_run, tmp_path, capsys
):
    common = [*SMALL, f"data.root={made_up_data.root}", EPOCHS, *SWEPT]
    with pytest.raises(SystemExit) as refused:  # refused before any rank starts: in this process
        run_entry_point(train_module.main, "-m", *common, f"hydra.sweep.dir={tmp_path / 'popen'}")
    assert refused.value.code == 1 and "every rank would start the sweep again" in capsys.readouterr().err
    assert not list((tmp_path / "popen").glob("*/checkpoints"))  # nothing trained
    sweep = strategy_run("frozen").parent  # the same sweep with spawn (the strategies test checks its jobs' outputs)
    assert sorted(job.parent.name for job in sweep.glob("*/metrics.json")) == ["0", "1"]


def rank_pid(launcher_pid: int, rank: int) -> int:
    """The process of `rank`: rank 0 is the command itself; Lightning starts the others as its children."""
    if rank == 0:
        return launcher_pid
    children = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split()
    for pid in children:
        if f"LOCAL_RANK={rank}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            return int(pid)
    raise AssertionError(f"no rank {rank} among the children {children} of {launcher_pid}")


# Lightning's own handler broadcast from inside the signal handler: with the ranks at different collectives
# (here at the checkpoint written as the epoch ends), a killed run could hang for ever instead of stopping.
def sigterm_rank(command: list[str], signalled: int, checkpoint: Path) -> subprocess.CompletedProcess:
    """Runs `command` until it writes `checkpoint` anew, then sends SIGTERM to rank `signalled` and waits for it."""
    before = checkpoint.stat().st_mtime_ns if checkpoint.is_file() else None
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and (not checkpoint.is_file() or checkpoint.stat().st_mtime_ns == before):
            time.sleep(0.05)
        os.kill(rank_pid(process.pid, signalled), signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:  # hung: leave no rank behind
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(command, process.returncode, "", stderr)


def test_sigterm_to_either_rank_stops_every_rank_and_resume_continues_exactly(made_up_data, strategy_run, tmp_path):
    """Rank 1 is signalled once the first epoch's checkpoint is written, rank 0 once the resumed run writes its next
    one (the last epoch then stops at its first batch, or as training ends); resumed again, with the unfreezes and
    the EMA weights, the run ends as the uninterrupted one."""
    common = [*SMALL, f"data.root={made_up_data.root}", EPOCHS, *GRADUAL_EMA]
    whole, killed = strategy_run("gradual_ema"), tmp_path / "killed"
    command = [sys.executable, "-m", "image_transfer.train", *common, f"hydra.run.dir={killed}"]
    for signalled, extra in ((1, []), (0, [f"resume={killed}"])):
        stopped = sigterm_rank([*command, *extra], signalled, killed / "checkpoints" / "last.ckpt")
        assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-2000:]
        assert not (killed / "metrics.json").exists()
    run(*common, f"hydra.run.dir={killed}", f"resume={killed}")
    assert metrics_without_timings(killed) == metrics_without_timings(whole)
