"""The one training function every chapter uses: model.fit with timing and the usual callbacks."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np


class EpochTimer(keras.callbacks.Callback):
    """Records the wall-clock seconds of every epoch.

    With `path` it also keeps every finished epoch's seconds and metrics in that JSON file, so that a run
    resumed from a backup (fit's backup_dir) still reports the epochs an earlier process trained: they are
    in `earlier`, and `checkpoint` (a ModelCheckpoint) learns the best value they reached, so that a worse
    resumed epoch does not replace the best model (the checkpoint needs mode "max" or "min" for that)."""

    def __init__(self, path: str | Path | None = None, checkpoint=None):
        super().__init__()
        self.path = Path(path) if path else None
        self.checkpoint = checkpoint

    def on_train_begin(self, logs=None):
        self.seconds, self.earlier = [], []
        self._stored = json.loads(self.path.read_text()) if self.path and self.path.is_file() else {}
        self._first = True

    def on_epoch_begin(self, epoch, logs=None):
        if self._first:  # epoch is where this call starts: 0, or the epoch after a restored backup
            self._first = False
            self._stored = {int(k): v for k, v in self._stored.items() if int(k) < epoch}
            self.earlier = [self._stored[k] for k in sorted(self._stored)]
            cp = self.checkpoint
            values = [e[cp.monitor] for e in self.earlier if cp is not None and cp.monitor in e]
            if values and cp.mode in ("max", "min"):  # "auto" decides only once metrics are built
                cp.best = max(values) if cp.mode == "max" else min(values)
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
        if self.path:
            self._stored[epoch] = {"seconds": self.seconds[-1], **{k: float(v) for k, v in (logs or {}).items()}}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(self.path.name + ".partial")
            partial.write_text(json.dumps(self._stored))
            os.replace(partial, self.path)


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """keras.callbacks.ModelCheckpoint for a fixed path, written atomically (same arguments).

    Keras saves in place, so a run killed during a save leaves a truncated file and loses the
    previous checkpoint too. This one saves beside the target, then renames the file (os.replace is
    atomic on one file system): a reader sees the old model or the new one. The best epoch so far
    waits in a hidden file beside the target (best_so_far) and takes the target's name when training
    ends: a run stopped half-way never leaves a half-trained model where later chapters look for the
    trained one, and a run resumed from its backup still knows it.
    """

    def __init__(self, filepath, **kwargs):
        self.final_path = Path(filepath)
        partial = self.final_path.with_name(f".{self.final_path.stem}.partial{self.final_path.suffix}")
        self.best_so_far = self.final_path.with_name(f".{self.final_path.stem}.best{self.final_path.suffix}")
        super().__init__(str(partial), **kwargs)

    def _publish(self):
        partial = Path(self.filepath)
        if partial.exists():
            with open(partial, "rb") as f:
                os.fsync(f.fileno())  # on disk before it takes the checkpoint's name
            os.replace(partial, self.best_so_far)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self.best_so_far.exists():
            os.replace(self.best_so_far, self.final_path)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self._publish()

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        self._publish()


@dataclass
class TrainingRun:
    history: dict  # metric name -> list of per-epoch values
    epoch_seconds: list = field(default_factory=list)

    @property
    def train_seconds(self) -> float:
        return float(sum(self.epoch_seconds))

    @property
    def epochs(self) -> int:
        return len(self.epoch_seconds)


def learning_rate_schedule(epochs: int, steps_per_epoch: int, learning_rate: float, warmup_epochs: int = 1):
    """Linear warm-up from 0 over `warmup_epochs`, then a half cosine to 0 at the last step (a function of the step)."""
    warmup = min(warmup_epochs, epochs - 1) * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else learning_rate, decay_steps=epochs * steps_per_epoch - warmup,
        warmup_target=learning_rate if warmup else None, warmup_steps=warmup)


def compile_classifier(model, *, epochs: int, steps_per_epoch: int, learning_rate: float = 0.1,
                       optimizer: str = "sgd", weight_decay: float = 5e-4, label_smoothing: float = 0.1,
                       warmup_epochs: int = 1):
    """Compile with the Part II recipe; labels must be one-hot (data.pipeline(..., classes=N)).

    - learning rate: a linear warm-up over `warmup_epochs`, then a half cosine down to zero;
    - optimizer "sgd": SGD with Nesterov momentum 0.9 (the ResNet recipe), or "adamw";
    - weight decay, decoupled from the gradient (Loshchilov & Hutter), skipped for BN and biases;
    - label smoothing: the target is 1 - s for the true class and s / classes spread over all.
    """
    if optimizer not in ("sgd", "adamw"):
        raise ValueError(f"optimizer must be 'sgd' or 'adamw', not {optimizer!r}")
    schedule = learning_rate_schedule(epochs, steps_per_epoch, learning_rate, warmup_epochs)
    if optimizer == "sgd":
        opt = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    else:
        opt = keras.optimizers.AdamW(schedule, weight_decay=weight_decay)
    opt.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])  # BN scale and shift, biases
    model.compile(optimizer=opt, loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
                  metrics=["accuracy"])
    return model


@dataclass(frozen=True)
class Recipe:
    """How the book trains its CIFAR-10 networks, from chapter 3's last step on. Chapters 4-7 train their
    main model with this one recipe and budget, so that their results compare architectures, not recipes."""

    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 0.1  # peak, reached after the warm-up; SGD with Nesterov momentum 0.9
    warmup_epochs: int = 1
    # decoupled (each step shrinks a weight by learning rate x decay), not applied to batch-norm parameters
    # and biases; 5e-3 at 0.1 shrinks as much per step as the common L2 5e-4 through momentum 0.9
    weight_decay: float = 5e-3
    label_smoothing: float = 0.1
    shift: int = 4  # augmentation: a random left-right flip and a random shift of up to this many pixels


RECIPE = Recipe()


def fit_recipe(model, x_train, y_train, validation_data, *, recipe: Recipe = RECIPE, epochs: int | None = None,
               checkpoint=None, backup_dir=None, seed: int = 42, verbose: int = 2) -> TrainingRun:
    """Train a model on uint8 images with the recipe: augmented tf.data pipeline, compile_classifier, fit.

    validation_data: (x_val, y_val) arrays. epochs: the recipe's unless given (smoke runs use fewer)."""
    from book_utils import data, models

    epochs = epochs or recipe.epochs
    classes = model.output_shape[-1]
    train_ds = data.pipeline(x_train, y_train, batch_size=recipe.batch_size, training=True,
                             augment=models.augmentation(seed, recipe.shift), classes=classes, seed=seed)
    val_ds = data.pipeline(*validation_data, batch_size=500, classes=classes)
    compile_classifier(model, epochs=epochs, steps_per_epoch=int(np.ceil(len(x_train) / recipe.batch_size)),
                       learning_rate=recipe.learning_rate, optimizer="sgd", weight_decay=recipe.weight_decay,
                       label_smoothing=recipe.label_smoothing, warmup_epochs=recipe.warmup_epochs)
    return fit(model, train_ds, epochs=epochs, validation_data=val_ds, checkpoint=checkpoint,
               backup_dir=backup_dir, verbose=verbose)


def predict_with_flip(model, images, batch_size: int = 500) -> np.ndarray:
    """Test-time augmentation: the average of the probabilities for each image and its mirror image."""
    images = np.asarray(images)
    return (model.predict(images, batch_size=batch_size, verbose=0)
            + model.predict(images[:, :, ::-1], batch_size=batch_size, verbose=0)) / 2


def fit(model, x, y=None, *, epochs: int, batch_size: int | None = 128, validation_data=None,
        validation_split: float = 0.0, checkpoint: str | Path | None = None,
        early_stopping: int | None = None, backup_dir: str | Path | None = None,
        callbacks=(), verbose: int = 2) -> TrainingRun:
    """Train a compiled model and time it.

    checkpoint: keep the best model (by validation accuracy) at this .keras path.
    early_stopping: stop after this many epochs without improvement, restoring the best weights.
    backup_dir: resume an interrupted run from its last finished epoch.
    """
    monitor = "val_accuracy" if (validation_data is not None or validation_split) else "accuracy"
    best = AtomicModelCheckpoint(checkpoint, monitor=monitor, mode="max", save_best_only=True) if checkpoint else None
    # with a backup, the timer keeps the finished epochs beside it, and runs before the backup is written:
    # a run killed between the two repeats an epoch the timer knows, instead of losing one
    timer = EpochTimer(Path(backup_dir) / "epochs.json" if backup_dir else None, checkpoint=best)
    cbs = [timer, *callbacks]
    if backup_dir:  # early, so that an epoch is saved before any other callback reports it done;
        # double_checkpoint keeps the previous epoch's backup in case a save is killed half-way
        cbs.insert(1, keras.callbacks.BackupAndRestore(str(backup_dir), double_checkpoint=True))
    if best:
        Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
        cbs.append(best)
    if early_stopping:
        cbs.append(keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=early_stopping,
                                                 restore_best_weights=True))
    history = model.fit(x, y, epochs=epochs, batch_size=None if y is None else batch_size,
                        shuffle=y is not None,  # a tf.data pipeline shuffles itself
                        validation_data=validation_data, validation_split=validation_split,
                        callbacks=cbs, verbose=verbose)
    # a resumed run: the epochs an earlier process trained come first
    return TrainingRun(history={k: [e.get(k, float("nan")) for e in timer.earlier] + list(v)
                                for k, v in history.history.items()},
                       epoch_seconds=[e["seconds"] for e in timer.earlier] + timer.seconds)


def earlier_model(filename: str, build, x_train, y_train, *, epochs: int, train_size: int | None = None,
                  batch_size: int = 128, optimizer: str = "sgd", learning_rate: float = 0.1, seed: int = 42):
    """An earlier chapter's trained model (env.models_dir() / filename), or, when it is absent, a
    stand-in: build() trained for `epochs` on `train_size` of the given images with the Part II recipe.

    Returns (model, source, train_seconds): source says which one it is, for the notebook and the record.
    """
    from book_utils import data, env, models

    path = env.models_dir() / filename
    if path.is_file():
        return keras.saving.load_model(path, safe_mode=True), f"{filename} (trained in its chapter)", 0.0
    x, y = data.subset(x_train, y_train, train_size, seed)
    if x.ndim == 3:
        x = x[..., None]
    model = build()
    steps = int(np.ceil(len(x) / batch_size))
    compile_classifier(model, epochs=epochs, steps_per_epoch=steps, learning_rate=learning_rate,
                       optimizer=optimizer)
    augment = models.augmentation(seed) if x.shape[-1] == 3 else None  # no flips for digits
    run = fit(model, data.pipeline(x, y, batch_size=batch_size, training=True, augment=augment, classes=10),
              epochs=epochs, verbose=0)
    if batch_norms(model):  # a few dozen steps leave the moving averages unsettled: set them from data
        recalibrate_batch_norm(model, x[:500], batch_size=min(500, len(x)))
    return model, (f"stand-in for {filename}: {model.name} trained here for {epochs} epoch{'s' * (epochs != 1)} "
                   f"on {len(x):,} images ({filename} not found in the models folder)"), run.train_seconds


def batch_norms(model) -> list:
    """Every BatchNormalization layer of a model, nested ones included."""
    return [layer for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization)]


def recalibrate_batch_norm(model, images, batch_size: int = 128) -> int:
    """Recompute every BatchNormalization layer's moving mean and variance from `images` with the trained
    weights: the average of its batch statistics over the batches (as "precise BN" does), the same on
    every replica. Run it after training and before saving. Other layers run as in training too
    (dropout), as they did when the statistics were gathered. Returns how many layers it set."""
    bns = batch_norms(model)
    images = np.asarray(images)
    if not bns:
        raise ValueError(f"{model.name} has no BatchNormalization layer to recalibrate")
    if len(images) < batch_size:
        raise ValueError(f"need at least one full batch of {batch_size} images, got {len(images)}")
    momenta = [bn.momentum for bn in bns]
    try:
        for k, start in enumerate(range(0, len(images) - batch_size + 1, batch_size), 1):
            for bn in bns:  # moving = moving * (k-1)/k + batch / k: the running mean of the k batches
                bn.momentum = (k - 1) / k
            model(images[start:start + batch_size].astype("float32"), training=True)
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
    return len(bns)
