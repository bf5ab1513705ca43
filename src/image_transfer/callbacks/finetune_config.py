"""The finetune group (configs/finetune/) read in one place: the strategy's name, when the backbone unfreezes, and
the schedule callback. Run code asks here instead of reading cfg.finetune; the model gets backbone_lr_factor and its
LR phases by interpolation (configs/model/pretrained.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hydra.utils import instantiate
from omegaconf import DictConfig

if TYPE_CHECKING:  # Lightning only names the schedule's type: readers such as scripts/reproduce.py start without it
    import lightning as L

# A schedule config that does not name itself (configs/finetune/base/schedule.yaml's own value).
CUSTOM = "custom"


@dataclass(frozen=True)
class Finetune:
    strategy: str  # frozen | full | freeze_unfreeze | gradual, or a config's own name (custom if it has none)
    unfreeze_at_epochs: tuple[int, ...]  # empty: the backbone never trains
    group: DictConfig | None

    def schedule(self) -> L.Callback:
        """A new FinetuneSchedule callback (it keeps state: one per trainer)."""
        return instantiate(self.group.callback)


def finetune(cfg: DictConfig) -> Finetune:
    """`cfg`'s finetune settings; a config without the group (eval, predict) has a backbone that never trains."""
    group = cfg.get("finetune")
    settings = group or {}
    return Finetune(
        strategy=str(settings.get("strategy") or CUSTOM),
        unfreeze_at_epochs=tuple(settings.get("unfreeze_at_epochs") or ()),
        group=group,
    )
