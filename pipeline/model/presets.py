"""The DSNet family's shape config and its named presets (torch-free; registered in
``pipeline.model.families``, the one owner of preset names)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator


class NetworkConfig(BaseModel):
    """A family's shape config, stored with every checkpoint. Each declares ``num_classes`` (the
    network's outputs) where it likes: field order is the order of a checkpoint's metadata bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    if TYPE_CHECKING:
        num_classes: int


class DSNetConfig(NetworkConfig):
    """Everything that determines the network's shape; stored with every checkpoint.

    Args:
        width: base width p; stages use p, 2p, 4p and 8p channels.
        stem_blocks: basic blocks in layer1 and layer2 (m in the paper).
        detail_blocks: basic blocks in each detail stage (n).
        context_blocks: MFACB blocks in layer4 (2 for DSNet, 3 for DSNet-Base).
        head_width: decoder width (4p in DSNet, 2p in the "head64" variant).
        num_classes: output classes.
        grids: MSAF context grid sizes.
        msaf_reduction: MSAF bottleneck reduction r.
        refine_width: width of the full-resolution refinement branch (0: none; the decoder's
            1/4-resolution logits are upsampled bilinearly, as in DSNet).
    """

    width: int = Field(32, ge=1)
    stem_blocks: int = Field(2, ge=1)
    detail_blocks: int = Field(2, ge=1)
    context_blocks: int = Field(2, ge=1)
    head_width: int = Field(128, ge=1)
    num_classes: int = Field(2, ge=1)
    grids: tuple[int, ...] = (4, 8, 16)
    msaf_reduction: int = Field(4, ge=1)
    refine_width: int = Field(0, ge=0)

    @field_validator("grids")
    @classmethod
    def _positive_grids(cls, grids: tuple[int, ...]) -> tuple[int, ...]:
        if any(k < 1 for k in grids):
            raise ValueError(f"grid sizes must be >= 1, got {grids}")
        return grids


DSNET_PRESETS: dict[str, DSNetConfig] = {
    "dsnet": DSNetConfig(width=32, stem_blocks=2, detail_blocks=2, context_blocks=2, head_width=128),
    "dsnet-base": DSNetConfig(width=64, stem_blocks=2, detail_blocks=3, context_blocks=3, head_width=256),
    "dsnet-tiny": DSNetConfig(width=8, stem_blocks=1, detail_blocks=1, context_blocks=2, head_width=32, grids=(4, 8)),
}
