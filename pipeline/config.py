"""Typed, validated configuration read from ``params.yaml``: the one source of defaults."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from pipeline.errors import MsafError
from pipeline.threads import usable_cores

# the network's arithmetic: auto is bf16 on CUDA and fp32 on a CPU (pipeline.inference.device)
Precision = Literal["auto", "fp32", "bf16"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassSpec(_Strict):
    """One output class and the mask pixel value(s) that mean it."""

    name: str
    values: list[int] = Field(min_length=1)


class DatasetConfig(_Strict):
    """One labelled data set: its folders, what its mask values mean, its GSD and how it is split.

    Classes missing from ``values`` are classes the set never labels (CFD has no joints): its
    background pixels may hide them, so the loss lets those pixels be background *or* any such
    class (partial labels) instead of teaching that they are background.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["photos", "geo"] = Field(
        "photos", description="photos: image/mask pairs; geo: a label set on an orthomosaic (`msaf labels`)"
    )
    images: Path | None = None
    masks: Path | None = None
    labelset: Path | None = Field(None, description="geo: the label set folder (labels.tif + labelset.json)")
    block_px: int = Field(512, ge=64, description="geo: block side at the working GSD, the unit of split and crops")
    values: dict[int, str] | None = Field(None, description="mask value -> class name; default: data.classes")
    ignore_values: list[int] = Field(default_factory=list)
    gsd_m: float | None = Field(None, gt=0.0, description="ground sample distance, when known")
    split: Literal["random", "by_photo"] = "random"
    photo_pattern: str = Field(r"^(.+?)[a-z]?$", description="by_photo: group 1 of this regex names the photo")
    val_fraction: float | None = Field(None, gt=0.0, lt=1.0, description="default: data.val_fraction")
    weight: float = Field(1.0, gt=0.0, description="share of training crops drawn from this set")

    @model_validator(mode="after")
    def _kind_has_its_data(self) -> DatasetConfig:
        if self.kind == "photos" and (self.images is None or self.masks is None):
            raise ValueError(f"data set {self.name}: a photos set needs `images` and `masks` folders")
        if self.kind == "geo" and (self.labelset is None or self.values is not None):
            raise ValueError(f"data set {self.name}: a geo set names a `labelset` folder (its classes say the values)")
        return self

    @model_validator(mode="after")
    def _pattern_compiles(self) -> DatasetConfig:
        try:
            if re.compile(self.photo_pattern).groups < 1:
                raise ValueError(f"photo_pattern {self.photo_pattern!r} needs a group naming the photo")
        except re.error as exc:
            raise ValueError(f"photo_pattern {self.photo_pattern!r} is not a regex ({exc})") from None
        return self


class DataConfig(_Strict):
    """Labelled training data: one or more data sets of images and masks paired by file stem.

    ``sets`` lists the data sets; without it, ``images``/``masks`` with ``classes``' values are the
    one data set (named ``data``).
    """

    images: Path = Path("data/raw/crackforest/images")
    masks: Path = Path("data/raw/crackforest/masks")
    classes: list[ClassSpec] = Field(
        default_factory=lambda: [ClassSpec(name="background", values=[0]), ClassSpec(name="crack", values=[255])],
        min_length=2,
    )
    ignore_values: list[int] = Field(default_factory=list)
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_seed: int = 42
    gsd_m: float | None = Field(0.001, gt=0.0, description="ground sample distance of the training photos")
    sets: list[DatasetConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _sets_consistent(self) -> DataConfig:
        names = self.class_names
        seen_sets: set[str] = set()
        for spec in self.sets:
            if spec.name in seen_sets:
                raise ValueError(f"two data sets are named {spec.name!r}")
            seen_sets.add(spec.name)
            for value, name in (spec.values or {}).items():
                if name not in names:
                    raise ValueError(
                        f"data set {spec.name}: value {value} maps to unknown class {name!r} "
                        f"(classes: {', '.join(names)})"
                    )
                if not 0 <= value <= 255 or value in spec.ignore_values:
                    raise ValueError(f"data set {spec.name}: mask value {value} is outside 0..255 or also ignored")
            if spec.values is not None and names[0] not in spec.values.values():
                raise ValueError(f"data set {spec.name}: no mask value means {names[0]!r}")
        return self

    @model_validator(mode="after")
    def _values_unique(self) -> DataConfig:
        seen: dict[int, str] = {}
        for spec in self.classes:
            for value in spec.values:
                if value in seen or value in self.ignore_values:
                    first = seen.get(value, "ignore")
                    raise ValueError(f"mask value {value} is mapped twice ({first} and {spec.name})")
                if not 0 <= value <= 255:
                    raise ValueError(f"mask value {value} of class {spec.name} is outside 0..255")
                seen[value] = spec.name
        return self

    @property
    def class_names(self) -> list[str]:
        """Class names in class-id order."""
        return [c.name for c in self.classes]

    @property
    def datasets(self) -> list[DatasetConfig]:
        """The data sets, with every default filled in (one set named ``data`` without ``sets``)."""
        if not self.sets:
            return [
                DatasetConfig(
                    name="data",
                    images=self.images,
                    masks=self.masks,
                    gsd_m=self.gsd_m,
                    ignore_values=self.ignore_values,
                    values=self.default_values(),
                    val_fraction=self.val_fraction,
                )
            ]
        return [
            s.model_copy(
                update={
                    "values": s.values or self.default_values(),
                    "val_fraction": s.val_fraction or self.val_fraction,
                }
            )
            for s in self.sets
        ]

    def default_values(self) -> dict[int, str]:
        """Mask value -> class name when a data set does not give its own ``values``."""
        return {value: spec.name for spec in self.classes for value in spec.values}


class ModelConfig(_Strict):
    """Which network to train: a preset plus field overrides (see ``pipeline.model.PRESETS``)."""

    preset: str = "dsnet"
    overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, preset: str) -> str:
        from pipeline.model.families import family_of

        family_of(preset)  # a ValueError naming the known presets
        return preset


class AugmentConfig(_Strict):
    """Training augmentations; all geometric ones keep masks aligned with images."""

    hflip: bool = True
    vflip: bool = True
    rot90: bool = True
    brightness: float = Field(0.2, ge=0.0, le=1.0)
    contrast: float = Field(0.2, ge=0.0, le=1.0)
    saturation: float = Field(0.2, ge=0.0, le=1.0)
    footprint: float = Field(0.0, ge=0.0, le=1.0)  # share of crops cut by a synthetic orthomosaic footprint edge
    scale: tuple[float, float] = Field(
        (1.0, 1.0), description="crop rescale range (log-uniform), e.g. (0.5, 2.0): the model sees many GSDs"
    )
    shadow: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of crops taken in a shadow: 0.05-0.5x the light with sensor noise (sigma 1-3 grey"
        " levels) before the other camera effects; with train.exposure_floor the lift shows them as a survey does",
    )
    blur: float = Field(0.0, ge=0.0, le=1.0, description="share of crops blurred (Gaussian, sigma 0.3-1.5 px)")
    noise: float = Field(0.0, ge=0.0, le=1.0, description="share of crops with sensor noise (sigma 1-8 grey levels)")
    jpeg: float = Field(0.0, ge=0.0, le=1.0, description="share of crops JPEG-recompressed (quality 30-90)")
    coarse: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of crops seen as a flight 1.2-2x higher delivers them to a survey: area-averaged"
        " down, the camera effects at that GSD, bilinear back up (what survey.resample: auto feeds the model)",
    )

    @field_validator("scale")
    @classmethod
    def _scale_range(cls, scale: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < scale[0] <= scale[1]:
            raise ValueError(f"augment.scale must be (low, high) with 0 < low <= high, got {scale}")
        return scale


class LossConfig(_Strict):
    """DSNet loss: OHEM CE on the main output + plain CE on the two auxiliary heads, + optional Dice."""

    main_weight: float = Field(0.6, ge=0.0)
    aux_weights: tuple[float, float] = (0.2, 0.2)
    ohem_thresh: float = Field(0.9, gt=0.0, le=1.0)
    ohem_min_kept: int = Field(131072, ge=1)
    dice_weight: float = Field(0.0, ge=0.0)
    dice_fp_share: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="Tversky: share of the overlap term's penalty on false positives (0.5: Dice; more: "
        "a prediction wider than its label costs more than one narrower)",
    )
    skeleton_weight: float = Field(0.0, ge=0.0, description="Skeleton Recall term: the labels' centrelines found")


class DistillConfig(_Strict):
    """Learning without forgetting: on crops of ``sets`` the network is also pulled towards a frozen
    teacher's class probabilities, so fine-tuning on a new set keeps what the teacher does well
    on the old ones (a plain fine-tune trades the concrete sets against masonry within a few hundred steps)."""

    weight: float = Field(0.0, ge=0.0, description="weight of the distillation term; 0: off")
    teacher: str = Field("init", description="`init` (the weights train.init starts from), `champion` or a path")
    sets: list[str] = Field(default_factory=list, description="data sets whose crops are distilled (empty: all)")
    temperature: float = Field(1.0, gt=0.0, description="softmax temperature of both distributions")
    scales: tuple[float, ...] = Field(
        (1.0,),
        description="the teacher's views (as survey.scales): [1, 2] teaches one view what the teacher sees in two",
    )

    @field_validator("scales")
    @classmethod
    def _views(cls, scales: tuple[float, ...]) -> tuple[float, ...]:
        from pipeline.inference.scales import check_scales  # torch-free

        return check_scales(scales)


INIT_KEYWORDS = ("none", "champion")  # train.init values that are not a checkpoint path


class TrainConfig(_Strict):
    """Optimisation settings."""

    out: Path = Path("models/model.safetensors")
    epochs: int = Field(10, ge=1)
    steps_per_epoch: int = Field(40, ge=1)
    batch_size: int = Field(8, ge=2, description="BatchNorm needs >= 2 samples")
    crop_size: int = Field(256, ge=32)
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(0.003, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    schedule: Literal["poly", "constant"] = "poly"
    poly_power: float = Field(0.9, gt=0.0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Precision = Field(
        "auto",
        description="autocast of the forward passes; auto: bf16 on CUDA, fp32 on a CPU; bf16 on a CPU with native"
        " bf16 (AVX512_BF16/AMX): ~1.7x faster steps. Validation always scores in fp32, as evaluation does",
    )
    seed: int = 0
    exposure_floor: float = Field(
        0.0,
        ge=0.0,
        le=255.0,
        description="crops darker than this mean luminance (0-255) are brightened to it, in training, validation and"
        " the saved model's surveys (pipeline.inference.predict.lift_shadows); 0: none",
    )
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    focus: float = Field(0.0, ge=0.0, le=1.0, description="share of crops centred on a labelled non-background pixel")
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0, description="EMA of the weights (validated and saved); 0: off")
    calibrate: list[str] = Field(
        default_factory=list, description="classes whose probability threshold is tuned on validation"
    )
    calibrate_scales: list[tuple[float, ...]] = Field(
        default_factory=list,
        description="multi-scale surveys (survey.scales) the chosen weights are calibrated for too, e.g. [[1, 2]]",
    )
    init: str = Field(
        "none",
        description="start from these weights: a checkpoint path, `champion` (the registry's) or `none` "
        "(random); tensors whose shape differs start fresh",
    )
    trainable: list[str] = Field(
        default_factory=list,
        description="train only parameters whose names start with one of these (e.g. [refine]: the "
        "full-resolution branch on a frozen network); empty: all",
    )
    state_minutes: float = Field(
        5.0, gt=0.0, description="save the full training state (resumable) at least this often, wall clock"
    )
    state_steps: int | None = Field(None, ge=1, description="also save the state every N steps (tests)")
    distill: DistillConfig = Field(default_factory=DistillConfig)

    @field_validator("calibrate_scales")
    @classmethod
    def _views(cls, views: list[tuple[float, ...]]) -> list[tuple[float, ...]]:
        from pipeline.inference.scales import check_scales  # torch-free

        return [check_scales(scales) for scales in views]


class EvalConfig(_Strict):
    """Evaluation settings."""

    tolerance_px: int = Field(2, ge=0, description="crack F1 tolerance, 2 px in the crack literature")


class ScalingConfig(_Strict):
    """How non-8-bit imagery (uint16, float) is brought to 8 bit before inference.

    ``bits`` (default): linear from 0 to the data's bit depth (see ``pipeline.raster.source``), so a
    rescaled copy of an 8-bit picture looks the same to the model; ``percentile``: a per-band
    contrast stretch (changes the picture); ``range``: linear from ``min`` to ``max``.
    """

    mode: Literal["bits", "percentile", "range"] = "bits"
    low: float = Field(2.0, ge=0, lt=50, description="percentile mapped to 0")
    high: float = Field(98.0, gt=50, le=100, description="percentile mapped to 255")
    min: float = 0.0
    max: float = 65535.0

    @model_validator(mode="after")
    def _range_ordered(self) -> ScalingConfig:
        if self.mode == "range" and not self.max > self.min:
            raise ValueError(f"scaling range needs max > min, got [{self.min}, {self.max}]")
        return self


class CollarConfig(_Strict):
    """An orthomosaic's painted-in footprint (``pipeline.raster.collar``): the black (or white) fill
    around and inside the mapped ground of a file that declares no alpha, nodata value or mask.

    ``auto`` (default): found only in such files; ``on``: also in files with a footprint of their
    own (a nodata value whose JPEG-blurred fill is no longer exactly it); ``off``: every pixel of a
    file without a footprint is ground.
    """

    mode: Literal["auto", "on", "off"] = "auto"
    near: int = Field(
        8, ge=0, le=64, description="grey levels from black (or white) in every band that still count as fill"
    )
    size: int = Field(
        32,
        ge=16,
        le=256,
        description="side of the square of fill a collar lies in (px, a multiple of 8; wider than a crack)",
    )
    smear: int = Field(
        48,
        ge=0,
        le=127,
        description="grey levels from the fill colour that still count beside the collar (a JPEG's smear)",
    )
    white: bool = Field(
        False, description="white fill too; off by default: clipped glare is white, and would be taken with it"
    )

    @field_validator("size")
    @classmethod
    def _on_the_lattice(cls, size: int) -> int:
        if size % 8:
            raise ValueError(f"collar size must be a multiple of 8 px (the lattice's cells), got {size}")
        return size


class SurveyConfig(_Strict):
    """Tiled inference over an orthomosaic."""

    model: Path = Path("models/model.safetensors")
    tile: int | None = Field(None, ge=16, description="tile side; default: the model's training tile size")
    overlap: int | None = Field(None, ge=0, description="tile overlap in px; default: tile // 4")
    block: int = Field(
        4096,
        ge=32,
        description="core size of a unit of work (memory ~ block^2); >= 32: tinier blocks cost a batch each",
    )
    batch: int = Field(8, ge=1, description="tiles per forward pass; batches are padded to this size")
    workers: int = Field(1, ge=1, description="blocks inferred concurrently")
    readers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="threads decoding the next block while the current one is inferred; auto: one per core (2-8)",
    )
    allow_vrt: bool = Field(False, description="read VRT inputs (a VRT can point at any file; raw bands never)")
    allow_remote: bool = Field(False, description="read URLs and GDAL virtual file systems (/vsicurl/, /vsis3/...)")
    tta: bool = False
    scales: tuple[float, ...] = Field(
        (1.0,),
        description="views of each tile whose probabilities are averaged, relative to the model's GSD (resample: off:"
        " to the input's pixels); (1, 2): also"
        " enlarged 2x, thin cracks are found more often, 5x the network's work; on a finer input the finest view"
        " reads its own pixels (README: multi-scale surveys)",
    )
    compile: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Precision = Field(
        "auto",
        description="the network's arithmetic; auto: bf16 on CUDA, fp32 on a CPU; bf16 on a CPU with native bf16"
        " (AVX512_BF16/AMX): ~2x faster, a slightly different mask (README)",
    )
    gdal_cache_mb: int = Field(128, ge=16, description="GDAL block cache cap; keeps peak memory flat")
    exposure_floor: float | None = Field(
        None,
        ge=0.0,
        le=255.0,
        description="tiles darker than this mean luminance (0-255) are brightened to it before the network (a"
        " shadow shown as the lit concrete the model learnt from); None: the model's own (its metadata); 0: off",
    )
    resample: Literal["auto", "off"] = Field(
        "auto", description="auto: infer at the model's working GSD, write on the input's grid; off: as it is"
    )
    resample_limit: float = Field(
        4.0, ge=1.0, description="auto resamples only inputs within this factor of the working GSD (beyond: as it is)"
    )
    gsd_tolerance: float = Field(2.0, ge=1.0, description="allowed ratio between survey and training GSD")
    gsd_policy: Literal["warn", "refuse", "ignore"] = "warn"
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    collar: CollarConfig = Field(default_factory=CollarConfig)

    @field_validator("scales")
    @classmethod
    def _views(cls, scales: tuple[float, ...]) -> tuple[float, ...]:
        from pipeline.inference.scales import check_scales  # torch-free

        return check_scales(scales)

    @property
    def reader_threads(self) -> int:
        """Decoding threads: ``readers``, or with auto one per core this process may use, 2 to 8
        (JPEG decoding scales with cores; beyond 8 a block's strips are too few to share)."""
        if self.readers != "auto":
            return int(self.readers)
        return min(8, max(2, usable_cores()))


class SeverityConfig(_Strict):
    """Severity thresholds (low / medium / high).

    Defaults follow the AASHTO Manual for Bridge Element Inspection (2nd ed., 2019): crack widths in
    reinforced concrete (defect 1130) are insignificant below 0.012 in (0.3 mm), moderate up to
    0.05 in (1.25 mm) and wide above; a spall or delamination (defect 1080) larger than 6 in
    (152 mm) across is rated Poor, i.e. about 0.018 m2 for a round spall.
    """

    crack_width_mm: tuple[float, float] = (0.3, 1.25)
    area_m2: tuple[float, float] = (0.005, 0.018)

    @model_validator(mode="after")
    def _ascending(self) -> SeverityConfig:
        for name in ("crack_width_mm", "area_m2"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"severity.{name} needs 0 < low <= high, got {(low, high)}")
        return self


FOOT_M = 0.3048


class ConditionConfig(_Strict):
    """Element condition states from cracking, cell by cell over the surveyed ground.

    Defaults follow the AASHTO Manual for Bridge Element Inspection (2019), defect 1130 (cracking,
    reinforced concrete): cracks spaced more than 3.0 ft (0.91 m) apart are insignificant, 1.0-3.0 ft
    moderate, less than 1.0 ft (0.30 m) heavy pattern (map) cracking; widths are rated by
    ``severity.crack_width_mm``. Element quantities are areas, so the surveyed ground is cut into
    square cells and each cell takes the state of the cracks in it.
    """

    cell_m: float = Field(0.5, gt=0, description="side of a condition cell, ground metres (the quantity's resolution)")
    spacing_window_m: float = Field(
        1.5, gt=0, description="side of the square over which a cracked cell's crack spacing is estimated"
    )
    crack_spacing_m: tuple[float, float] = Field(
        (1.0 * FOOT_M, 3.0 * FOOT_M), description="heavy below the first, insignificant above the second"
    )
    min_luminance: float = Field(
        20.0,
        ge=0.0,
        le=255.0,
        description="a cell darker than this mean luminance (0-255) cannot show a crack: its state is a range to CS3",
    )
    max_clipped_share: float = Field(
        0.95,
        ge=0.0,
        le=1.0,
        description="a cell with more than this share of clipped (white) pixels cannot show a crack: a range to CS3",
    )
    max_blur_px: float = Field(
        2.0,
        gt=0.0,
        description="a cell whose orthomosaic is blurred beyond this (step-edge sigma, px) cannot show a thin crack:"
        " a range to CS3",
    )

    @model_validator(mode="after")
    def _ascending(self) -> ConditionConfig:
        heavy, insignificant = self.crack_spacing_m
        if not 0 < heavy <= insignificant:
            raise ValueError(f"condition.crack_spacing_m needs 0 < heavy <= insignificant, got {self.crack_spacing_m}")
        return self


class ElementsConfig(_Strict):
    """A structure's element polygons (deck spans, pier caps...), whose condition states a report
    adds per element: any vector file in any CRS, each polygon named in ``field``."""

    path: Path = Field(description="vector file of the element polygons (relative to params.yaml)")
    layer: str | None = Field(None, description="its layer (default: the first)")
    field: str = Field("element", description="the field that names each element")


class RegistrationConfig(_Strict):
    """msaf compare: how the new survey is aligned onto the old one before their defects are matched.

    Two flights' orthomosaics of one structure are rarely on the same ground to the millimetre
    (GNSS without ground control: centimetres to metres), while cracks are matched within
    ``match_distance_m``. ``auto`` measures the translation between the two orthomosaics (phase
    correlation, coarse to fine, checked by independent windows) and moves the new survey's defects
    by it; ``off`` compares them where they are.
    """

    mode: Literal["auto", "off"] = Field(
        "auto", description="auto: align the epochs from their orthomosaics; off: as they lie"
    )
    max_shift_m: float = Field(
        1.0, gt=0, description="a larger measured offset is not applied (another structure, or ground too alike)"
    )
    min_windows: int = Field(3, ge=1, description="independent windows that must agree on the shift to apply it")


class ReportConfig(_Strict):
    """Vectorising, measuring and reporting defects."""

    def split_classes(self, class_names: list[str]) -> tuple[list[str], list[str]]:
        """(defect classes, non-defect classes) among a mask's classes; background is neither."""
        foreground = class_names[1:]
        non_defects = [n for n in foreground if n in self.non_defect_classes]
        if self.defect_classes is None:
            return [n for n in foreground if n not in non_defects], non_defects
        defects = [n for n in foreground if n in self.defect_classes and n not in non_defects]
        return defects, [n for n in foreground if n not in defects]

    strip_rows: int = Field(2048, ge=1, description="mask rows vectorised at a time (memory bound)")
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="processes measuring defects; auto: one per core once a mask holds 200 defects or more,"
        " 1: all in this process",
    )
    max_piece_px: int = Field(
        4096,
        ge=256,
        description="a crack network wider or taller than this is measured in pieces of this square (px),"
        " one crack_id: memory bounded by the square",
    )
    min_area_m2: float = Field(2e-5, ge=0, description="smaller defects are dropped (20 px at 1 mm GSD)")
    link_gap_m: float = Field(
        0.02, ge=0, description="pieces of mask whose ends face each other across this gap are one crack (0: off)"
    )
    simplify_m: float = Field(0.0005, ge=0, description="polygon simplification tolerance, ground units")
    crack_classes: list[str] = Field(default_factory=lambda: ["crack"])
    defect_classes: list[str] | None = Field(
        None, description="classes reported as defects; default: every class but background and non_defect_classes"
    )
    non_defect_classes: list[str] = Field(
        default_factory=lambda: ["joint"],
        description="built lines that are not defects (joints): a separate GPKG layer, never counted or rated",
    )
    severity: SeverityConfig = Field(default_factory=SeverityConfig)
    condition: ConditionConfig = Field(default_factory=ConditionConfig)
    elements: ElementsConfig | None = Field(
        None, description="element polygons: condition states per element in every report (msaf report --elements)"
    )
    chips: int = Field(8, ge=0, description="defect image chips in the HTML report")
    match_distance_m: float = Field(0.02, ge=0, description="compare: registration tolerance")
    registration: RegistrationConfig = Field(default_factory=RegistrationConfig)
    change_tolerance: float = Field(0.1, ge=0, description="compare: relative change counted as growth")
    width_band: Literal["own", "same"] = Field(
        "same",
        description="compare: the old cracks read in both orthomosaics over the same band (same: where both "
        "are at hand and both reports read widths from them; bench/widening_detection.py, "
        "bench/history_growth.py), or crack widths as each report read them (own)",
    )


class RegistryConfig(_Strict):
    """Model registry: the registered model and the alias surveys use."""

    name: str = "msaf-defects"
    alias: str = "champion"
    guard_sets: list[str] | None = Field(
        None, description="sets a candidate may not regress on (by more than tolerance); None: every set"
    )
    tolerance: float = Field(0.01, ge=0.0, description="allowed fall of a guarded set's tolerant F1")
    survey_size: int = Field(
        0,
        ge=0,
        description="also gate on surveys of a stitched SIZE² mosaic of each set's validation photos (0: off)",
    )


class Params(_Strict):
    """The whole ``params.yaml``."""

    # the sections that shape a training: what a checkpoint records and a training state is keyed by
    # (survey, report and registry settings never change the weights, so adding one of those does
    # not change the bytes a `make repro` writes)
    TRAINING_SECTIONS: ClassVar[frozenset[str]] = frozenset({"data", "model", "train", "evaluate"})

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    survey: SurveyConfig = Field(default_factory=SurveyConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)

    @model_validator(mode="after")
    def _calibrated_classes_exist(self) -> Params:
        if unknown := sorted(set(self.train.calibrate) - set(self.data.class_names[1:])):
            raise ValueError(f"train.calibrate names {unknown}: not a non-background class of data.classes")
        if unknown := sorted(set(self.train.distill.sets) - {spec.name for spec in self.data.datasets}):
            raise ValueError(f"train.distill.sets names {unknown}: not a data set of data.sets")
        return self

    _base: Path | None = PrivateAttr(None)  # the folder of params.yaml, once paths are resolved against it

    def _with_paths(self, change: Callable[[Path], Path]) -> Params:
        """A copy with ``change`` applied to every path (the one list of them)."""
        copy = self.model_copy(deep=True)
        copy.data.images = change(Path(copy.data.images))
        copy.data.masks = change(Path(copy.data.masks))
        for spec in copy.data.sets:
            for key in ("images", "masks", "labelset"):
                if getattr(spec, key) is not None:
                    setattr(spec, key, change(Path(getattr(spec, key))))
        copy.train.out = change(Path(copy.train.out))
        if copy.train.init not in INIT_KEYWORDS:
            copy.train.init = str(change(Path(copy.train.init)))
        if copy.train.distill.teacher not in (*INIT_KEYWORDS, "init"):
            copy.train.distill.teacher = str(change(Path(copy.train.distill.teacher)))
        copy.survey.model = change(Path(copy.survey.model))
        if copy.report.elements is not None:
            copy.report.elements.path = change(Path(copy.report.elements.path))
        return copy

    def resolve_paths(self, base: Path) -> Params:
        """Paths in params.yaml are relative to the file; make them absolute."""
        resolved = self._with_paths(lambda path: (base / path).resolve())
        resolved._base = base.resolve()
        return resolved

    def recorded(self) -> dict[str, Any]:
        """The training sections of the params as a checkpoint records them, paths inside the project
        relative to it again: the same training in a clone elsewhere writes the same bytes (absolute
        paths made a fresh clone's `make repro` differ from the recorded model in its metadata alone)."""
        base = self._base

        def relative(path: Path) -> Path:
            return path.relative_to(base) if base is not None and path.is_relative_to(base) else path

        return self._with_paths(relative).model_dump(mode="json", include=set(self.TRAINING_SECTIONS))


def _describe(error: ValidationError, source: Path) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    extra = f" ({len(error.errors()) - 1} more problem(s))" if len(error.errors()) > 1 else ""
    return f"{source}: invalid key '{key}': {first['msg']}{extra}"


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate params.yaml; raise MsafError naming the file and the bad key."""
    path = Path(path)
    if not path.is_file():
        raise MsafError(f"{path}: params file not found; run from the project root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise MsafError(f"{path}: not valid YAML ({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from None
    except UnicodeDecodeError as exc:
        raise MsafError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except ValueError as exc:  # a scalar YAML reads as an impossible date, e.g. 2026-13-45
        raise MsafError(f"{path}: a value YAML cannot read ({exc}); quote it") from None
    if not isinstance(raw, dict):
        raise MsafError(f"{path}: expected a mapping of sections (data, model, train, evaluate)")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        raise MsafError(_describe(exc, path)) from None
    return params.resolve_paths(path.resolve().parent)


FINETUNE_CPU: dict[str, Any] = {  # `msaf train --finetune`: from the champion, minutes on 2 CPU cores
    "train.init": "champion",
    "train.epochs": 2,
    "train.steps_per_epoch": 100,
    "train.batch_size": 8,
    "train.lr": 0.0003,
    "train.schedule": "poly",
    "train.ema_decay": 0.99,
    "train.distill.teacher": "init",
}


def finetune_preset(params: Params) -> dict[str, Any]:
    """The CPU fine-tuning schedule as param overrides: a short, gentle run from the champion that
    keeps the champion's answer on the photo sets (distillation) while it learns the geo sets."""
    photos = [spec.name for spec in params.data.datasets if spec.kind == "photos"]
    return FINETUNE_CPU | {"train.distill.weight": 1.0 if photos else 0.0, "train.distill.sets": photos}


def load_params_or_defaults(
    path: str | Path | None, survey_overrides: dict[str, Any] | None = None, *, required: bool = False
) -> Params:
    """The settings file when given and present (or ``required``), else the built-in defaults; plus
    validated survey overrides (command-line flags), whose mistakes are MsafErrors too."""
    if path is None or str(path) == "":
        params = Params().resolve_paths(Path.cwd())
    else:
        path = Path(path)
        params = load_params(path) if required or path.exists() else Params().resolve_paths(Path.cwd())
    if survey_overrides:
        try:
            survey = SurveyConfig.model_validate(params.survey.model_dump() | survey_overrides)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise MsafError(f"invalid option --{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None
        params = params.model_copy(update={"survey": survey})
    return params
