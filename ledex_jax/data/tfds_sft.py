"""A TFDS builder for SFT records: prepares ``<split>.jsonl`` files into TFDS (sharded TFRecords
with a fixed example order), so large collections stream per host and read the same everywhere.

    builder = prepare_sft_tfds("collected/", data_dir="~/tensorflow_datasets")
    # then data_cfg.source = "tfds", data_cfg.tfds_name = "ledex_sft:1.0.0", data_cfg.tfds_data_dir = ...

Importing this module registers the builder under the name "ledex_sft" (TFDS registers builder
classes when they are defined). Every record is validated on the way in.
"""
from __future__ import annotations

from pathlib import Path

import tensorflow_datasets as tfds
from etils import epath

from ledex_jax.data.records import FIELDS, SFTRecordError, read_sft_jsonl

NAME = "ledex_sft"


class LedexSft(tfds.core.GeneratorBasedBuilder):
    """SFT records (see ledex_jax.data.records): one split per ``<split>.jsonl`` in manual_dir."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Records with id, problem, wrong_code, feedback, explanation, refined_code, "
                              "format, source."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Put the SFT record files written by the collection pipeline, named "
                                    "<split>.jsonl (e.g. train.jsonl), in one folder and pass it as manual_dir.")

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's own lookup probes `importlib_resources`, which the pinned tensorflow-datasets
        # does not install; the answer is simply this file.
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description="LeDex SFT records: explanations and refinements of wrong code.",
            features=tfds.features.FeaturesDict({f: tfds.features.Text() for f in FIELDS}))

    def _split_generators(self, dl_manager):
        files = sorted(Path(dl_manager.manual_dir).glob("*.jsonl"))
        if not files:
            raise SFTRecordError(f"no <split>.jsonl files in {dl_manager.manual_dir}; "
                                 f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        return {p.stem: self._generate_examples(p) for p in files}

    def _generate_examples(self, path: Path):
        for rec in read_sft_jsonl(path):
            yield rec.id, rec.to_json()


def prepare_sft_tfds(jsonl_dir: str | Path, data_dir: str | Path) -> LedexSft:
    """Prepares the ``<split>.jsonl`` files of ``jsonl_dir`` under ``data_dir``; returns the builder."""
    jsonl_dir = Path(jsonl_dir).expanduser()
    if not jsonl_dir.is_dir():
        raise SFTRecordError(f"{jsonl_dir} is not a folder; pass the folder that holds <split>.jsonl files")
    builder = LedexSft(data_dir=str(Path(data_dir).expanduser()))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(jsonl_dir)))
    return builder
