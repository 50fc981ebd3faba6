"""How test predictions are made and refined: the thresholds that turn probabilities into a refined result,
and test-time augmentation (the ``eval`` section of a config)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EvalConfig(BaseModel):
    """How test predictions are made, refined and flagged."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    seg_threshold: float = Field(0.5, gt=0, lt=1)
    min_lesion_pixels: int = Field(0, ge=0, description="at the original image size")
    uncertainty_threshold: float = Field(0.6, gt=0, le=1)
    malignant_threshold: float = Field(
        0.5, gt=0, lt=1, description="a lesion is called malignant when p(malignant | lesion) reaches this "
        "(0.5: the likelier lesion class); the classifier's operating point")
    refine_policy: Literal["published", "keep-class", "segmentation"] = Field(
        "published", description="'published': class normal clears the mask, an empty mask means normal; "
        "'keep-class': an empty mask keeps the classifier's lesion class; 'segmentation': the mask decides "
        "lesion or normal, the classifier names the lesion (all flag disagreements as inconsistent)"
    )
    tta: bool = Field(False, description="predict each test image also mirrored left-right and average the two "
                      "(maps and class probabilities), as 'buscad predict --tta'")
