"""The epoch record: typed for code, flat for the CSV, the checkpoint and MLflow, and back."""

from pipeline.training.history import EpochRecord


def test_an_epoch_record_flattens_to_the_history_columns_and_reads_back():
    record = EpochRecord(
        epoch=2,
        loss=0.5,
        lr=1e-4,
        val_miou=0.6,
        val_fg_iou=0.4,
        val_fg_f1=0.55,
        val_fg_tol_f1=0.7,
        val_score=0.72,
        set_scores={"crackforest": 0.8, "uav75": 0.64},
        thresholds={"crack": 0.55},
        seconds=12.0,
        val_seconds=3.0,
    )
    flat = record.flat()
    assert list(flat) == [
        "epoch",
        "loss",
        "lr",
        "val_miou",
        "val_fg_iou",
        "val_fg_f1",
        "val_fg_tol_f1",
        "val_score",
        "val_crackforest_score",
        "val_uav75_score",
        "threshold_crack",
        "seconds",
        "val_seconds",
    ]
    assert flat["val_uav75_score"] == 0.64 and flat["threshold_crack"] == 0.55
    assert "seconds" not in record.flat(timings=False)
    assert EpochRecord.from_flat(flat) == record
    assert EpochRecord.from_flat(record.flat(timings=False)) == record.model_copy(
        update={"seconds": None, "val_seconds": None}
    )
