"""A Keras callback that stops `fit` at the first non-finite loss and diagnoses it.

    from nandoctor.keras import NanDoctorCallback

    model.fit(x, y, batch_size=32, shuffle=False,
              callbacks=[NanDoctorCallback(x, y, batch_size=32)])

Before each batch the callback keeps a copy of the weights on the device.
When the loss turns non-finite, it stops training and puts the weights from
before that batch back into the model. It then runs the same forward,
backward and op-level diagnosis as `nandoctor scan`: on the failing batch
with `shuffle=False`, else on all the data it was given, because the batch
cannot be known. The report is printed and kept in `.report`.
"""

import math

import keras
import numpy as np
import tensorflow as tf


class NanDoctorCallback(keras.callbacks.Callback):
    """Stop training at the first non-finite loss and print nandoctor's diagnosis.

    Args:
        x: The training inputs given to `fit` (an array or a list of arrays),
            or None to only stop training and restore the weights.
        y: The training targets, or None (the diagnosis then uses a stand-in loss).
        batch_size: The `fit` batch size. With `shuffled=False` it lets the
            callback diagnose exactly the batch that failed.
        shuffled: Whether `fit` shuffles the data (Keras's default). When True,
            the diagnosis runs on all of `x` and `y`.
        print_report: Print the text report to stdout (default True).
    """

    def __init__(self, x=None, y=None, batch_size=None, shuffled=False, print_report=True):
        super().__init__()
        self.x = x
        self.y = y
        self.batch_size = batch_size
        self.shuffled = shuffled
        self.print_report = print_report
        self.report = None
        """The `ScanReport` of the diagnosis, once a non-finite loss was seen."""
        self.failed_batch = None
        """(epoch, batch) of the first non-finite loss."""
        self._epoch = 0
        self._snapshot = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self._snapshot = [tf.identity(variable.value) for variable in self.model.weights]

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        self.model.stop_training = True
        self.failed_batch = (self._epoch, batch)
        for variable, value in zip(self.model.weights, self._snapshot):
            variable.assign(value)
        if self.x is None:
            return

        from nandoctor.scanner import scan_model

        x, y = self._batch_data(batch)
        self.report = scan_model(self.model, x, y, batch_size=self.batch_size or 64, training=True)
        self.report.notes.append(
            f"diagnosed by NanDoctorCallback at epoch {self._epoch}, batch {batch}, with the weights "
            "from before that batch" + (" on all given samples (fit shuffles)" if self.shuffled else ""))
        if self.print_report:
            from rich.console import Console

            from nandoctor.report.text import render

            render(self.report, Console(highlight=False))

    def _batch_data(self, batch):
        if self.shuffled or not self.batch_size:
            return self.x, self.y
        start, stop = batch * self.batch_size, (batch + 1) * self.batch_size

        def cut(data):
            if data is None:
                return None
            if isinstance(data, (list, tuple)):
                return [np.asarray(item)[start:stop] for item in data]
            return np.asarray(data)[start:stop]

        return cut(self.x), cut(self.y)
