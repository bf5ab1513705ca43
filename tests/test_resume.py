"""freeze_unfreeze interrupted after the unfreeze epoch resumes with the right state and ends as an uninterrupted
run: a tiny EfficientNet on made-up data (fast), and the default model on the real data (slow)."""

import lightning as L
import pytest
import torch

from image_transfer.train import train
from tests.helpers.configs import NO_PICTURES, TINY, compose_config, without

# With pictures: drawing must leave a resumed run exact.
RUN = without(NO_PICTURES, TINY) + [
    "data.subset=96",
    "finetune=freeze_unfreeze",
    "finetune.unfreeze_at_epochs=[1]",
    "trainer.max_epochs=3",
]


class StopAtEpoch(L.Callback):
    """Simulates a crash at the start of `epoch` (after the previous epoch's checkpoint)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


class CheckResumedState(L.Callback):
    """Saves to `out`, at the first epoch after resuming, what is trainable and the optimizer state."""

    def __init__(self, out: str):
        self.out, self.done = out, False

    def on_train_epoch_start(self, trainer, pl_module):
        if not self.done:
            state = {
                "epoch": trainer.current_epoch,
                "backbone_trainable": all(p.requires_grad for p in pl_module.backbone.parameters()),
                "optimizer": trainer.optimizers[0].state_dict(),
            }
            torch.save(state, self.out)
            self.done = True


@pytest.mark.slow  # three fits
@pytest.mark.parametrize("data", ["made_up_tiny_efficientnet", "real"])
def test_resume_after_unfreeze_continues_exactly(tmp_path, data, request):
    if data == "real":
        request.getfixturevalue("shared_data")
        run = RUN
    else:  # timm's test_efficientnet: EfficientNet's layout (and plenty of parameters to carry Adam state), tiny
        root = request.getfixturevalue("made_up_data").root
        tiny = ["model.backbone=timm/test_efficientnet", "model.pretrained=false", "model.image_size=32"]
        run = [*RUN, *tiny, f"data.root={root}"]
    uninterrupted = train(compose_config("train", tmp_path / "a", run))

    crash = ["+callbacks.stop._target_=tests.test_resume.StopAtEpoch", "+callbacks.stop.epoch=2"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(compose_config("train", tmp_path / "b", run + crash))
    last = tmp_path / "b" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=False)
    assert saved["epoch"] == 1

    probe = [
        "+callbacks.probe._target_=tests.test_resume.CheckResumedState",
        f"+callbacks.probe.out={tmp_path}/probe.pt",
    ]
    resumed = train(compose_config("train", tmp_path / "c", run + probe + [f"ckpt_path={last}"]))
    seen = torch.load(tmp_path / "probe.pt", weights_only=False)
    assert seen["epoch"] == 2 and seen["backbone_trainable"], "resume re-froze the backbone"
    restored, expected = seen["optimizer"]["state"], saved["optimizer_states"][0]["state"]
    assert restored.keys() == expected.keys() and len(restored) > 10  # backbone parameters carry Adam state
    for index in expected:
        assert torch.equal(restored[index]["exp_avg"], expected[index]["exp_avg"])

    # (test/* differ by design: the resumed run's "best" checkpoint tracks its own run dir.)
    for key in ("val/acc", "val/loss", "val/acc_best", "train/loss", "train/acc"):
        assert resumed[key] == pytest.approx(uninterrupted[key], abs=1e-6), key
