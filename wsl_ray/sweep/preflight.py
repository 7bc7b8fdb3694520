"""What a sweep settles before Ray starts: the data loads (with the fix when it does not),
and, on request, the untrained encoder's scores as a baseline."""

from __future__ import annotations

from ..config import Config, check_data_fit
from ..data import ImageData, load_dataset
from ..training.device import resolve_device
from ..training.evaluate import evaluate_run
from ..training.loop import initial_model


def untrained_baseline(cfg: Config, data: ImageData) -> dict[str, float]:
    """Validation k-NN and linear accuracy (and RankMe) of the encoder a run of `cfg`
    starts from."""
    device = resolve_device(cfg.device)
    model = initial_model(cfg, data.crop_size, device)
    print("evaluating the untrained encoder (--baseline) ...", flush=True)
    return evaluate_run(model, data.subset(cfg.subset), device, cfg)


def check_data(cfg: Config, space_name: str) -> ImageData:
    """Loads the dataset once before Ray starts: missing files fail here, with the fix."""
    try:
        data = load_dataset(cfg.dataset, cfg.data_dir, val_size=cfg.val_size)
        check_data_fit(cfg, data.subset(cfg.subset))  # a --val_size or --knn that does not fit
        return data
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{err}\nEvery node that runs trials needs the data at this same path (a shared "
            "file system, or a copy on each node). Or sweep the embedded data: "
            f"python -m wsl_ray.tune --space {space_name} --dataset shapes"
        ) from None
