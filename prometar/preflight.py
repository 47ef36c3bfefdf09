"""Pre-flight checks: what can be known about a run's inputs before it starts.

A sweep launches many trials. An input that cannot work (a missing checkpoint, a backbone name
that does not exist, prompts deeper than the backbone, a dataset folder without its split file)
should stop the launch with one message naming the key or path. It should not fail every trial
with a traceback. :class:`Preflight` checks one resolved run config at a time and remembers what
it has already checked, so a sweep of many trials over a few datasets and one backbone costs a few
reads:

- the backbone config exists (``load_model_config``), and the prompt depths fit its towers;
- ``backbone.pretrained``: a local file must exist and its weights must fit the architecture,
  and a hub tag must be available offline. The weights are loaded once per (backbone,
  pretrained) pair, exactly as a run loads them;
- every dataset the run reads (``data.dataset`` and ``eval.targets``) has its layout and split
  files, and every image they name exists (``data check --quick``). Images are not decoded here:
  a corrupt image found by a trial ends that trial FAILED, naming the file.

Nothing is written: no cache, no output folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prometar.backbone import load_clip, load_model_config
from prometar.config import ConfigError, RunConfig
from prometar.data.check import check_datasets
from prometar.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["Preflight"]


class Preflight:
    """Checks run configs' inputs before they run, each distinct input once.

    Args:
        data_root: The data root the runs will read; None checks the backbone parts only (the
            data lives elsewhere, e.g. on a cluster's nodes).
        weights: Load each distinct (backbone, pretrained) pair's weights; False checks the
            backbone's name and the prompt depths only (the weights live elsewhere).
    """

    def __init__(self, data_root: str | Path | None, *, weights: bool = True) -> None:
        self.data_root = None if data_root is None else Path(data_root).expanduser().resolve()
        self.weights = weights
        self._datasets: set[str] = set()
        self._backbones: set[tuple[str, str | None]] = set()

    def check(self, config: RunConfig, *, source: str = "<run config>") -> None:
        """Raise the first problem with ``config``'s inputs.

        Raises:
            prometar.config.ConfigError: Prompt depth larger than the backbone's towers.
            prometar.backbone.BackboneError: Unknown backbone; missing, unreadable or unfitting
                weights (names the file or tag).
            prometar.data.DataError: A dataset that a run would fail to read (names the path).
        """
        self._check_backbone(config, source)
        if self.data_root is not None:
            for key in dict.fromkeys((config.data.dataset, *config.eval.targets)):
                self._check_dataset(key)

    def _check_backbone(self, config: RunConfig, source: str) -> None:
        name, pretrained = config.backbone.name, config.backbone.pretrained
        model_config = load_model_config(name)
        towers = {"text": model_config.get("text_cfg", {}), "vision": model_config.get("vision_cfg", {})}
        for tower, depth in (("text", config.prompts.text_depth), ("vision", config.prompts.vision_depth)):
            blocks = towers[tower].get("layers")
            if isinstance(blocks, int) and depth > blocks:
                raise ConfigError(
                    f"prompts.{tower}_depth",
                    f"{tower}_depth={depth}: expected an integer in 0..{blocks} (the tower's "
                    f"blocks; backbone {name})",
                    source=source,
                )
        if self.weights and pretrained is not None and (name, pretrained) not in self._backbones:
            # Exactly as a run loads them: a missing file, an unknown or unavailable tag and
            # weights that do not fit the architecture are each a BackboneError naming them.
            load_clip(name, pretrained, device="cpu", precision="fp32", cache_dir=config.backbone.cache_dir)
            self._backbones.add((name, pretrained))

    def _check_dataset(self, key: str) -> None:
        assert self.data_root is not None
        if key in self._datasets:
            return
        (report,) = check_datasets(self.data_root, [key], decode=False)
        if not report.usable:
            raise DataError(f"{key}: {report.problem}")
        self._datasets.add(key)
