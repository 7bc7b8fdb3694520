"""The papers' settings as presets: each one valid for its dataset and reference workers."""

import pytest

from wsl_ray.config import Config, config_from_args, validate_config
from wsl_ray.config.recipes import RECIPES, get_recipe
from wsl_ray.data import DATASETS
from wsl_ray.methods.networks import get_encoder
from wsl_ray.sweep.space import load_space
from wsl_ray.train import build_parser, parse_run_args

# the views' size in the reference datasets/ code (aug_transform's crop)
REFERENCE_IMAGE_SIZE = {
    "cifar10": 32,
    "cifar100": 32,
    "stl10": 64,
    "tiny_in": 64,
    "imagenet100": 224,
    "imagenet": 224,
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_fits_its_dataset_and_batch(name):
    recipe = RECIPES[name]
    cfg = recipe.config()
    validate_config(cfg, workers=recipe.workers)  # w_size divides each worker's batch, ...
    size = DATASETS[cfg.dataset].crop_size
    assert size == REFERENCE_IMAGE_SIZE[cfg.dataset]
    stem, _ = get_encoder("resnet18_w8", size)
    assert stem.conv1.stride == ((2, 2) if size > 96 else (1, 1))
    assert recipe.line.startswith("python ") and recipe.source


def test_recipes_read_the_reference_flags_and_defaults():
    cfg = get_recipe("cwrgp4_tiny_in").config()  # --epochs, --group; base/cfg.py's emb 512
    assert (cfg.epoch, cfg.groups, cfg.emb, cfg.head_size, cfg.zero_init_residual) == (
        1000,
        2,
        1024,
        2048,
        True,
    )
    assert get_recipe("cwrgp2_cifar100").config().emb == 512
    in100 = get_recipe("wmse4_imagenet100").config()
    assert (in100.dataset, in100.crop_s0, in100.cj0, in100.gs_p, in100.bs) == (
        "imagenet100",
        0.08,
        0.8,
        0.2,
        256,
    )
    imagenet = get_recipe("cwrgp4_imagenet_200ep").config()
    assert (imagenet.optimizer, imagenet.lr_step, imagenet.cov_w, imagenet.cov_stop) == (
        "sgd",
        "cos_epoch",
        0.01,
        100,
    )
    assert get_recipe("wmse2_cifar10").target == "91.55 / 89.69"
    with pytest.raises(ValueError, match="unknown --recipe"):
        get_recipe("wmse_mnist")


def test_flags_beside_a_recipe_override_it():
    cfg = config_from_args(
        parse_run_args(build_parser(), ["--recipe", "wmse4_stl10", "--epoch", "3"])
    )
    assert (cfg.epoch, cfg.num_samples, cfg.emb, cfg.w_size, cfg.lr) == (3, 4, 128, 256, 2e-3)


def test_imagenet_space_starts_at_the_imagenet_recipe():
    space = load_space("cw_rgp_in1k")
    first = Config(**space.resolve(space.first)).to_dict()
    recipe = get_recipe("cwrgp4_imagenet_100ep").config().to_dict()
    differ = {k for k in first if first[k] != recipe[k]}
    assert differ == {"eval_every"}, differ  # only how often we evaluate
    assert "No reference number exists" in load_space_description("cw_rgp_in100")


def load_space_description(name):
    import yaml

    from wsl_ray.sweep.space import space_path

    return " ".join(yaml.safe_load(space_path(name).read_text())["description"].split())


def test_intl_recipes_read_its_two_scripts_defaults():
    """cifar/cfg.py and cfg.py's defaults under the lines, and the cosine's end at lr / 1000
    of the optimiser's peak lr x bs / 256."""
    cifar = get_recipe("intl_cifar100").config()
    assert (cifar.method, cifar.dataset, cifar.epoch, cifar.bs, cifar.lr, cifar.adam_l2) == (
        "intl",
        "cifar100",
        1000,
        256,
        0.3,
        1e-4,
    )
    assert (cifar.head_layers, cifar.head_size, cifar.emb, cifar.intl_iters) == (3, 2048, 2048, 4)
    assert (cifar.optimizer, cifar.lr_step, cifar.warmup_epochs, cifar.eta_min) == (
        "sgd",
        "cos_step",
        2,
        pytest.approx(3e-4),
    )
    assert (cifar.aug, cifar.cj2, cifar.gs_p, cifar.crop_s0) == ("intl", 0.2, 0.2, 0.08)
    assert (cifar.solarize_p, cifar.blur_p) == ([0.0, 0.2], None)
    in100 = get_recipe("intl_imagenet100").config()
    assert (in100.dataset, in100.arch, in100.bs, in100.head_size, in100.emb) == (
        "imagenet100",
        "resnet18",
        128,
        4096,
        8192,
    )
    assert (in100.lr, in100.adam_l2, in100.epoch, in100.blur_p) == (0.5, 2.5e-5, 400, [1.0, 0.1])
    assert in100.eta_min == pytest.approx(0.001 * 0.5 * 128 / 256)
    assert get_recipe("intl_cifar10").target == "92.60 / 90.03 (top-5 99.80)"


def test_lejepa_recipe_takes_the_authors_resnet_guidance():
    """AdamW at lr 5e-4 with weight decay 5e-4 (README, ResNets), lambda 0.05 (the ablation
    scripts), the cosine to lr / 1000; list flags read as one probability for all views."""
    recipe = get_recipe("lejepa_cifar10")
    cfg = recipe.config()
    assert (cfg.method, cfg.optimizer, cfg.lr, cfg.adam_l2) == ("lejepa", "adamw", 5e-4, 5e-4)
    assert (cfg.lejepa_lambda, cfg.num_samples, cfg.bs, cfg.emb) == (0.05, 4, 256, 512)
    assert cfg.lr_step == "cos_step" and cfg.eta_min == pytest.approx(cfg.lr / 1000)
    assert (cfg.solarize_p, cfg.blur_p, cfg.crop_s0, cfg.cj2) == ([0.2], [0.0], 0.3, 0.2)
    assert "LEJEPA_SOURCES" in recipe.source and recipe.target == ""
