"""The Dagster training log says how long each step waited for data, beside its speed."""

import logging

from assets.progress import TrainingLog
from ul_pipeline.train.loop import TrainState


def test_the_training_log_shows_the_time_waiting_for_data(caplog):
    log = TrainingLog(logging.getLogger("ul-test"), "stage1")
    with caplog.at_level(logging.INFO, logger="ul-test"):
        log.on_start(TrainState(), 640)
        log.on_log(TrainState(2, 64), {"loss_nats": 1.5, "samples_per_s": 410.0, "data_wait_s": 0.06,
                                       "compute_s": 0.018})
    assert caplog.messages[-1] == ("stage1: 64/640 samples (10%), loss 1.5 nats, 410 samples/s, "
                                   "data wait 60.0 ms/step (77% of 78 ms)")
