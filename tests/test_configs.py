import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from image_transfer import CONFIG_DIR
from tests.helpers.configs import compose_config

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def test_the_issue_experiments_exist():
    assert {
        "seed_cnn",
        "seed_vgg16_frozen",
        "resnet50_feature_extraction",
        "resnet50_finetune",
        "lite0_finetune",
    } <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_resolves(experiment, tmp_path):
    cfg = compose_config("train", tmp_path, [f"experiment={experiment}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["model"]["backbone"]
    assert resolved["data"]["image_size"] == resolved["model"]["image_size"]


@pytest.mark.parametrize("group", ["model", "finetune", "trainer", "callbacks", "debug", "data", "logger"])
def test_every_group_option_composes(group, tmp_path):
    for option in sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml")):
        if option == "checkpoint":  # eval's and predict's: the data settings saved in the checkpoint
            continue
        extra = ["model.backbone=resnet18"] if option == "pretrained" else []
        extra += (
            ["data.class_names=[a,b,c]"] if group == "data" and option != "emergency_vehicles" else []
        )  # train infers them
        OmegaConf.to_container(compose_config("train", tmp_path, [f"{group}={option}", *extra]), resolve=True)


SETS = OmegaConf.load(CONFIG_DIR / "reproductions.yaml")


@pytest.mark.parametrize("name", sorted(SETS))
def test_every_reproduction_row_composes(name, tmp_path):
    assert {"seeds", "offline", "best"} <= set(SETS)
    for row in SETS[name].rows:
        cfg = compose_config("train", tmp_path, [f"experiment={row.experiment}", *row.get("overrides", [])])
        OmegaConf.to_container(cfg, resolve=True)


def test_experiment_settings_match_the_seed_articles(tmp_path):
    cnn = compose_config("train", tmp_path, ["experiment=seed_cnn"])
    assert (cnn.model.backbone, cnn.trainer.max_epochs, cnn.data.batch_size) == ("cnn", 15, 128)
    vgg = compose_config("train", tmp_path, ["experiment=seed_vgg16_frozen"])
    assert (vgg.model.backbone, vgg.finetune.unfreeze_at_epochs, vgg.trainer.max_epochs, vgg.data.batch_size) == (
        "vgg16",
        [],
        30,
        128,
    )


def test_finetune_choice_reaches_the_model(tmp_path):
    cfg = compose_config("train", tmp_path, ["finetune=freeze_unfreeze"])
    assert cfg.model.lr_phase_epochs == cfg.finetune.callback.unfreeze_at_epochs == [2]
    assert cfg.model.backbone_lr_factor == 0.1


@pytest.mark.parametrize("name", ["eval", "predict"])
def test_eval_and_predict_compose(name, tmp_path):
    cfg = compose_config(name, tmp_path, ["ckpt_path=x.ckpt"])
    OmegaConf.to_container(cfg, resolve=True)


def test_seed_zero_is_a_seed(tmp_path):
    import os

    import torch

    from image_transfer.runs.build import seed_run

    seed_run(compose_config("train", tmp_path, ["seed=0"]))
    first = torch.rand(3)
    assert os.environ["PL_GLOBAL_SEED"] == "0"
    seed_run(compose_config("train", tmp_path, ["seed=0"]))
    assert torch.equal(first, torch.rand(3))


def test_resolving_a_train_config_creates_nothing(tmp_path):
    """Resolvers only name things: the run dir and the sweep dir are claimed when a run starts (runs/run_dirs.py)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=[f"paths.log_dir={tmp_path / 'logs'}"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "named")  # ${hydra:runtime.output_dir} exists only in a running job
    run_dir, sweep_dir, _ = (OmegaConf.select(cfg, f"hydra.{key}") for key in ("run.dir", "sweep.dir", "output_subdir"))
    OmegaConf.to_container(OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"]), resolve=True)
    assert run_dir.startswith(str(tmp_path / "logs" / "train" / "runs" / "20"))
    assert sweep_dir.startswith(str(tmp_path / "logs" / "train" / "multiruns" / "20"))
    assert list(tmp_path.iterdir()) == []
