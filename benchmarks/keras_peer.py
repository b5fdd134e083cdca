"""The Keras 3 peer (TensorFlow backend): the seed's model, ``fit`` and ``predict``, in its own process.

The other benchmark scripts start this file as a child (``common.run_keras``) so that TensorFlow's
thread pools and memory stay apart from the PyTorch measurements; it can also be run by hand:

    .venv/bin/python benchmarks/keras_peer.py throughput --batch 32 --epochs 2 --out /tmp/k.json
    .venv/bin/python benchmarks/keras_peer.py accuracy --epochs 10 --out /tmp/k.json
    .venv/bin/python benchmarks/keras_peer.py infer --out /tmp/k.json

The model is the seed's: Conv2D(32, 3, relu) -> MaxPool2D -> Conv2D(64, 3, relu) -> MaxPool2D ->
Flatten -> Dense(64, relu) -> Dense(10, softmax), SGD(lr 0.01, momentum 0.9), categorical
cross-entropy, on x / 255 as float32 (N, 28, 28, 1) and one-hot labels, from the same Fashion-MNIST
IDX files as the PyTorch sides. TensorFlow gets ``--threads`` intra-op and inter-op threads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from timing import lat_summary, latencies

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def setup_tf(threads: int, seed: int) -> Any:
    import tensorflow as tf

    # Before any op runs: afterwards TensorFlow refuses to change its pools.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras

    keras.utils.set_random_seed(seed)
    return keras


def seed_model(keras: Any, num_classes: int = 10, jit: bool = False) -> Any:
    from keras import layers

    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(num_classes, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=True if jit else "auto",  # "auto" is off on a CPU-only machine
    )
    return model


def arrays(limit: int | None, test_limit: int | None) -> dict[str, np.ndarray]:
    """uint8 (N, 1, 28, 28) from pixclass's reader (numpy only, no torch) -> NHWC."""
    from pixclass.data.sources import fashion_mnist

    src = fashion_mnist(download=True)
    tr, te = src.splits["train"], src.splits["test"]
    assert tr.images is not None and te.images is not None
    return {
        "x_train": tr.images[:limit].transpose(0, 2, 3, 1),
        "y_train": tr.labels[:limit],
        "x_test": te.images[:test_limit].transpose(0, 2, 3, 1),
        "y_test": te.labels[:test_limit],
    }


def to_float(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255.0  # the seed's preprocessing


def one_hot(y: np.ndarray, k: int = 10) -> np.ndarray:
    return np.eye(k, dtype=np.float32)[y]


def make_epoch_timer(keras: Any) -> Any:
    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self.logs: list[dict[str, float]] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds.append(time.perf_counter() - self.t0)
            self.logs.append({k: float(v) for k, v in (logs or {}).items()})

    return EpochTimer()


# ----------------------------------------------------------------------------------------- tasks
def task_throughput(a: argparse.Namespace, keras: Any) -> dict[str, Any]:
    """Images/s of ``fit``: one call, ``--epochs`` epochs, each timed by a callback."""
    d = arrays(a.limit, 1)
    x, y = to_float(d["x_train"]), one_hot(d["y_train"])
    model = seed_model(keras, jit=a.jit)
    timer = make_epoch_timer(keras)
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=a.batch, epochs=a.epochs, shuffle=True, verbose=0, callbacks=[timer])
    total = time.perf_counter() - t0
    n = len(x)
    return {
        "n": n,
        "batch": a.batch,
        "jit_compile": a.jit,
        "epoch_seconds": timer.seconds,
        "epoch_img_per_s": [n / s for s in timer.seconds],
        "fit_seconds": total,
        "train_loss": [lg.get("loss") for lg in timer.logs],
    }


def task_accuracy(a: argparse.Namespace, keras: Any) -> dict[str, Any]:
    """The seed's recipe (batch 32, SGD 0.01/0.9, ``--epochs``) with the test accuracy after each epoch.

    The clock starts with the uint8 arrays in memory (before the float conversion, model build and
    compile) and leaves out the time spent evaluating on the test set, which is the benchmark's own."""
    d = arrays(a.limit, a.test_limit)
    x_test = to_float(d["x_test"])
    y_test = d["y_test"]
    excluded = [0.0]
    rows: list[dict[str, float]] = []
    t_start = time.perf_counter()
    x, y = to_float(d["x_train"]), one_hot(d["y_train"])
    model = seed_model(keras, jit=a.jit)

    class TestAccuracy(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            t_in = time.perf_counter()
            epoch_s = t_in - self.t0
            probs = self.model.predict(x_test, batch_size=1024, verbose=0)
            acc = float((probs.argmax(1) == y_test).mean())
            rows.append(
                {
                    "epoch": epoch + 1,
                    "wall_s": t_in - t_start - excluded[0],
                    "epoch_s": epoch_s,
                    "train_loss": float((logs or {}).get("loss", float("nan"))),
                    "train_acc": float((logs or {}).get("accuracy", float("nan"))),
                    "test_acc": acc,
                }
            )
            print(
                f"keras epoch {epoch + 1}: test acc {acc:.4f}, {epoch_s:.1f} s, "
                f"{len(x) / epoch_s:,.0f} img/s, wall {rows[-1]['wall_s']:.1f} s",
                flush=True,
            )
            excluded[0] += time.perf_counter() - t_in

    model.fit(x, y, batch_size=a.batch, epochs=a.epochs, shuffle=True, verbose=0, callbacks=[TestAccuracy()])
    return {"n_train": len(x), "n_test": len(x_test), "batch": a.batch, "epochs": a.epochs, "history": rows}


def task_infer(a: argparse.Namespace, keras: Any) -> dict[str, Any]:
    """Batch-1 latency of ``predict`` (and of the lighter ``predict_on_batch`` and ``model(x)``), and
    images/s at batch ``--batch``: ``predict(x, batch_size=B)`` over ``--n-images`` test images (one call,
    so its per-call set-up is spread over many batches), the lighter calls on one batch of B."""
    d = arrays(1, max(a.batch, a.n_images))
    xs = to_float(d["x_test"])
    xb, x1 = xs[: a.batch], xs[:1]
    model = seed_model(keras)
    res: dict[str, Any] = {"batch": a.batch, "n_images": len(xs), "latency": {}, "throughput": {}}
    ways = {
        "predict": (lambda x: model.predict(x, batch_size=a.batch, verbose=0)),
        "predict_on_batch": (lambda x: model.predict_on_batch(x)),
        "call": (lambda x: model(x, training=False).numpy()),
    }
    for name, f in ways.items():
        res["latency"][name] = lat_summary(latencies(lambda f=f: f(x1), a.calls, a.warmup, a.max_seconds))
        if name == "predict":
            lat = latencies(lambda f=f: f(xs), a.repeats, 1, a.max_seconds, min_calls=1)
            ips = len(xs) / statistics.median(lat)
        else:
            lat = latencies(lambda f=f: f(xb), a.batch_calls, 3, a.max_seconds)
            ips = a.batch / statistics.median(lat)
        res["throughput"][name] = {"calls": len(lat), "img_per_s": ips}
        print(
            f"keras {name}: batch 1 p50 {res['latency'][name]['p50_ms']:.2f} ms, "
            f"batch {a.batch}: {ips:,.0f} img/s",
            flush=True,
        )
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=("throughput", "accuracy", "infer"))
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--out", type=Path, required=True, help="JSON result file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="first N training images")
    ap.add_argument("--test-limit", type=int, default=None, help="first N test images")
    ap.add_argument(
        "--jit", action="store_true", help="compile(jit_compile=True): XLA (off by default on CPU)"
    )
    ap.add_argument("--calls", type=int, default=500, help="infer: batch-1 calls timed")
    ap.add_argument("--batch-calls", type=int, default=30, help="infer: full-batch calls timed")
    ap.add_argument(
        "--n-images", type=int, default=10_000, help="infer: test images given to one predict call"
    )
    ap.add_argument("--repeats", type=int, default=3, help="infer: predict calls over --n-images timed")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument(
        "--max-seconds", type=float, default=30.0, help="infer: stop a measurement after this long"
    )
    a = ap.parse_args(argv)
    keras = setup_tf(a.threads, a.seed)
    import tensorflow as tf

    task = {"throughput": task_throughput, "accuracy": task_accuracy, "infer": task_infer}[a.task]
    res = task(a, keras)
    res["versions"] = {"keras": keras.__version__, "tensorflow": tf.__version__}
    res["threads"] = {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
    }
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
