"""Does the model use the lesion? Lesion-free twins on disk, and the criterion's records and verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from monai.transforms import Compose, EnsureChannelFirstd, EnsureTyped, LoadImaged, Resized, ScaleIntensityd
from PIL import Image
from scipy import ndimage
from torch import nn
from torch.utils.data import DataLoader

from bundle.criteria import LesionReliance, StudyContext
from bundle.data import GroundTruthMaskd, RadiographReader, load_rsna_datalist
from bundle.data.synthetic_dataset import write_lesion_free_twins
from bundle.models import ModelSpec
from bundle.summary import summarise

IMAGE_PIPELINE = [LoadImaged("image", reader=RadiographReader(), image_only=True),
                  EnsureChannelFirstd("image", channel_dim="no_channel"), ScaleIntensityd("image"),
                  Resized("image", (64, 64), mode="area")]


def _pixels(path: str) -> np.ndarray:
    """Stored values (rows, columns), as written."""
    return pydicom.dcmread(path).pixel_array.astype(np.int32)


def test_twins_share_the_background_and_lose_the_lesion(small_dataset):
    positives = load_rsna_datalist(small_dataset, labels=1)
    twins = write_lesion_free_twins(small_dataset, [p["image_id"] for p in positives])
    assert [t["image_id"] for t in twins] == [p["image_id"] for p in positives]
    for positive, twin in zip(positives, twins):
        image, clean = _pixels(positive["image"]), _pixels(twin["image"])
        with Image.open(positive["mask"]) as mask:
            lesion = np.asarray(mask) > 0
        assert pydicom.dcmread(twin["image"]).PhotometricInterpretation == pydicom.dcmread(
            positive["image"]).PhotometricInterpretation
        near = ndimage.binary_dilation(lesion, iterations=3)
        assert np.array_equal(image[~near], clean[~near]), positive["image_id"]
        assert (image[lesion] != clean[lesion]).mean() > 0.3, "the twin has no lesion where the original had it"
    again = write_lesion_free_twins(small_dataset, [positives[0]["image_id"]])  # reused, not rewritten
    assert again[0]["image"] == twins[0]["image"]
    with pytest.raises(ValueError, match="no image 'nope'"):
        write_lesion_free_twins(small_dataset, ["nope"])


class MeanIntensity(nn.Module):
    """Class 1 logit = mean intensity: a lesion (denser, brighter) raises it."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([-m, m], dim=1)


class Inverted(MeanIntensity):
    """Class 1 logit falls with intensity: the lesion-free twin always scores higher."""

    def forward(self, x):
        return -super().forward(x)


class Blind(nn.Module):
    """Ignores its input: every pair is a tie, which a sign test drops."""

    def forward(self, x):
        return torch.zeros(x.shape[0], 2)


@pytest.mark.parametrize("model, verdict", [(MeanIntensity(), "PASS"), (Inverted(), "FAIL"),
                                            (Blind(), "INCONCLUSIVE")])
def test_lesion_reliance_records_and_verdict(small_dataset, model, verdict):
    items = load_rsna_datalist(small_dataset, labels=1)
    pipeline = Compose([*IMAGE_PIPELINE, GroundTruthMaskd(), EnsureTyped(["image", "mask"], track_meta=False)])
    loader = DataLoader([pipeline(i) for i in items], batch_size=4)
    ctx = StudyContext(primary=ModelSpec("toy"), load_model=lambda spec: model, checkpoint_digest=lambda spec: "",
                       dataloader=loader, sources={}, kinds={})
    criterion = LesionReliance("synthetic", str(small_dataset),
                               Compose([*IMAGE_PIPELINE, EnsureTyped("image", track_meta=False)]))
    records = [r for batch in criterion.evaluate(ctx) for r in batch]
    assert [r.image_id for r in records if r.metric == "positive_higher"] == [i["image_id"] for i in items]
    frame = pd.DataFrame([r.__dict__ for r in records])
    higher = frame[frame.metric == "positive_higher"].value.to_numpy()
    differences = frame[frame.metric == "logit_difference"].value.to_numpy()
    np.testing.assert_array_equal(higher, np.where(differences == 0, np.nan, (differences > 0).astype(float)))
    verdicts = criterion.verdicts(summarise(frame, {}), None)
    assert verdicts.verdict.tolist() == [verdict], verdicts.rule.tolist()
    if verdict == "INCONCLUSIVE":  # all ties
        assert "0 untied pairs: too few for a sign test" in verdicts.rule.iloc[0]
    else:
        assert f"{int(np.nansum(higher))}/{len(items)} pairs" in verdicts.rule.iloc[0]
        assert f"mean logit difference {differences.mean():+.2f} [" in verdicts.rule.iloc[0]


def test_lesion_reliance_is_skipped_without_twins(caplog):
    criterion = LesionReliance("rsna", "/nowhere", lambda item: item)
    with caplog.at_level("INFO"):
        assert criterion.sources(None) == []
    assert "only synthetic data has lesion-free twins" in caplog.text
