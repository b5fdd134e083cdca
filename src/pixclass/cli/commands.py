"""Sub-commands beyond ``data``: thin wrappers that parse, build a config and call the library."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .lr_find import register as register_lr_find

RAW = argparse.RawDescriptionHelpFormatter


# ----------------------------------------------------------------------------------------------- train
def _train_overrides(a: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {}
    for k in ("model", "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule",
              "warmup_epochs", "loss", "label_smoothing", "grad_clip", "ema", "metric", "patience", "seed", "device"):
        v = getattr(a, k)
        if v is not None:
            o[k] = v
    if a.no_nesterov:
        o["nesterov"] = False
    if a.channels_last:
        o["channels_last"] = True
    if a.no_calibrate:
        o["calibrate"] = False
    aug = {k: getattr(a, k) for k in ("pad", "rotate", "hflip", "translate", "erase") if getattr(a, k) is not None}
    if a.crop_scale is not None:
        aug["crop_scale"] = tuple(a.crop_scale)
    if aug:
        o["augment"] = aug
    data = {}
    for k in ("image_size", "channels", "max_pixels", "workers", "val_fraction", "test_fraction", "split_seed", "kind", "frames"):
        v = getattr(a, k, None)
        if v is not None:
            data[k] = v
    if data:
        o["data"] = data
    return o


def cmd_train(a: argparse.Namespace) -> int:
    from ..config import DATA_DEFAULTS, PRESETS, TrainConfig, load_yaml, merge
    from ..data.sources import DataError
    from ..engine.fit import train

    if a.resume:
        run = Path(a.resume)
        if not (run / "config.yaml").is_file():
            raise DataError(f"{run}: not a run folder (no config.yaml); give the --out folder of the interrupted run")
        cfg = merge(TrainConfig(), load_yaml(run / "config.yaml"), str(run / "config.yaml"))
        # --epochs / --patience may extend a resumed run; the learning-rate schedule is then laid out
        # for the new budget from the step reached. Every other option comes from the run's config.yaml.
        extend = {k: getattr(a, k) for k in ("epochs", "patience") if getattr(a, k) is not None}
        if extend:
            cfg = merge(cfg, extend, "command line")
        data = a.data or json.loads((run / "split_manifest.json").read_text())["data"]
        out = run
    else:
        if not a.data:
            raise DataError("train: give DATA (a folder, a CSV or fashion-mnist), or --resume RUN_DIR")
        data = a.data
        cfg = TrainConfig()
        if data.lower() in ("fashion-mnist", "fashion_mnist", "fmnist"):
            cfg = merge(cfg, DATA_DEFAULTS["fashion-mnist"], "fashion-mnist defaults")
        if a.preset:
            cfg = merge(cfg, PRESETS[a.preset], f"preset {a.preset}")
        if a.config:
            cfg = merge(cfg, load_yaml(a.config), a.config)
        try:
            cfg = merge(cfg, _train_overrides(a), "command line")
        except (TypeError, ValueError) as e:
            raise DataError(str(e)) from e
        out = Path(a.out or f"runs/{a.name or Path(str(data).rstrip('/')).name}")
        if (out / "resume.safetensors").exists() and not a.overwrite:
            raise DataError(f"{out}: already holds a run; continue it with --resume {out}, or pass --out NEW_DIR or --overwrite")
    t0 = time.perf_counter()
    res = train(data, cfg, out, resume=bool(a.resume), progress=not a.quiet)
    print(f"run folder: {res.run_dir}   best checkpoint: {res.best}")
    print(f"training time: {res.train_seconds:.1f} s (total with data and evaluation: {time.perf_counter() - t0:.1f} s)")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    from ..config import PRESETS

    p = sub.add_parser(
        "train", help="train a model on DATA",
        description="Train a classifier. Writes to --out (default runs/<data name>): best.safetensors, "
        "last.safetensors, config.yaml, metrics.csv, split_manifest.json (and broken_files.txt when some "
        "images could not be read). Options: built-in defaults < --preset < --config FILE < flags.",
        epilog="examples:\n  pixclass train photos/ --epochs 20\n  pixclass train fashion-mnist --preset seed\n"
        "  pixclass train data.csv --model resnet18 --image-size 64 --optimizer adamw --lr 1e-3\n"
        "  pixclass train --resume runs/photos", formatter_class=RAW,
    )
    p.add_argument("data", nargs="?", metavar="DATA", help="folder, CSV or fashion-mnist (see `pixclass --help`)")
    p.add_argument("--out", help="run folder (default runs/<name>)")
    p.add_argument("--name", help="run name for the default run folder")
    p.add_argument("--overwrite", action="store_true", help="start afresh in an --out folder that already holds a run")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run where it stopped")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a named recipe: seed (the article's Keras recipe), fast (a narrower net, 3 epochs: ~91%% on Fashion-MNIST in ~45 s on 2 cores), best (longer, more accurate)")
    p.add_argument("--config", metavar="YAML", help="options from a YAML file (same names as the flags, with _)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("model and optimisation")
    g.add_argument("--model", help="model name (see `pixclass models`; default rescnn)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--optimizer", choices=("sgd", "adamw"))
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--momentum", type=float)
    g.add_argument("--no-nesterov", action="store_true", help="plain momentum instead of Nesterov")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--schedule", choices=("constant", "cosine", "onecycle"))
    g.add_argument("--warmup-epochs", type=float)
    g.add_argument("--loss", choices=("ce", "mse"), help="cross-entropy, or the seed's MSE on softmax vs one-hot")
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--grad-clip", type=float, help="max gradient norm")
    g.add_argument("--ema", type=float, help="weight EMA decay per step (e.g. 0.999)")
    g.add_argument("--metric", choices=("val_acc", "val_loss"), help="picks best.safetensors and early stopping")
    g.add_argument("--patience", type=int, help="stop after this many epochs without improvement")
    g.add_argument("--seed", type=int, help="makes a run repeatable on the same machine")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"))
    g.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    g.add_argument("--no-calibrate", action="store_true", help="skip the temperature fit on the validation split")
    g = p.add_argument_group("augmentation (applied in batches on the device)")
    g.add_argument("--crop-scale", type=float, nargs=2, metavar=("MIN", "MAX"), help="random-resized-crop area range, e.g. 0.6 1")
    g.add_argument("--pad", type=int, help="pad-and-crop: random shift of up to PAD pixels")
    g.add_argument("--rotate", type=float, help="random rotation within +-DEGREES")
    g.add_argument("--hflip", type=float, help="horizontal flip probability (off unless the data allows it)")
    g.add_argument("--translate", type=float, help="random shift as a fraction of the side")
    g.add_argument("--erase", type=float, help="random-erasing probability")
    g = p.add_argument_group("data")
    g.add_argument("--image-size", type=int, help="training resolution (default: the data's median size, capped at 128)")
    g.add_argument("--channels", type=int, choices=(1, 3))
    g.add_argument("--max-pixels", type=int, help="refuse larger images without decoding them")
    g.add_argument("--workers", type=int, help="decode processes (default: all cores)")
    g.add_argument("--val-fraction", type=float, help="validation share carved from train when the data has no val split (0.1)")
    g.add_argument("--test-fraction", type=float, help="test share carved when the data has no split at all (0.1)")
    g.add_argument("--split-seed", type=int, help="seed of the stratified split (0)")
    _add_sequence_opts(g)
    p.set_defaults(func=cmd_train)


def _add_sequence_opts(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--kind", choices=("auto", "images", "sequences"),
                   help="images, or sequences (DATA/<class>/<sample>/<frame files>, one clip per sample folder); default: auto-detect")
    g.add_argument("--frames", type=int, help="sequences: frames per clip, sampled uniformly; shorter clips repeat their last frame (default: median length, at most 32)")


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime"),
                   help="inference runtime: auto = onnxruntime on the CPU when installed and the model exports "
                   "exactly (measured ~1.7x faster than PyTorch for small CNNs), else PyTorch (default: auto)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time flip (mean of the image and its mirror). Default: what the checkpoint says; "
                   "training turns it on when the model trained with flips and it helps on the validation split")


# -------------------------------------------------------------------------------------------- evaluate
def cmd_evaluate(a: argparse.Namespace) -> int:
    from ..evaluate import evaluate
    from ..metrics import format_report

    plots = a.plots or str(Path(a.checkpoint).parent)
    m = evaluate(a.checkpoint, a.data, a.split, device=a.device, progress=not a.quiet, plots=plots,
                 backend=a.backend, tta=a.tta)
    classes = list(m["per_class"])
    print(f"{m['data']} [{m['split']}]")
    print(format_report(m, classes))
    if m.get("ece_uncalibrated") is not None:
        print(f"ECE before calibration {m['ece_uncalibrated']:.4f}, after (T = {m['temperature']:.3f}) {m['ece']:.4f}")
    print(f"test-time flip {'on' if m['tta'] else 'off'}; runtime {m['backend']}")
    if m["broken"]:
        print(f"skipped {len(m['broken'])} unreadable image(s), e.g. {m['broken'][0]['path']}: {m['broken'][0]['reason']}")
    print(f"confusion matrix plot: {m['confusion_png']}")
    if m.get("reliability_png"):
        print(f"reliability diagram: {m['reliability_png']}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(m, indent=1))
        print(f"metrics written to {a.json}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="metrics of a checkpoint on a dataset",
        description="Accuracy, top-5, per-class precision/recall/F1, macro/weighted averages, confusion matrix "
        "(printed and saved as PNG), log-loss and expected calibration error. DATA may be a plain class folder "
        "(every image is evaluated), a split folder or CSV (--split picks), or fashion-mnist (its official test set).",
        formatter_class=RAW,
    )
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--split", default="test", help="split to evaluate when DATA has splits (default: test)")
    p.add_argument("--json", metavar="FILE", help="write every metric as JSON")
    p.add_argument("--plots", metavar="DIR", help="folder for the confusion-matrix PNG (default: the checkpoint's folder)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    _add_runtime_options(p)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)


# --------------------------------------------------------------------------------------------- predict
def cmd_predict(a: argparse.Namespace) -> int:
    from ..data.decode import DecodeError
    from ..data.sequences import expand_clips
    from ..predict import Predictor, expand_paths, write_csv

    pred = Predictor.from_checkpoint(a.checkpoint, device=a.device, backend=a.backend, tta=a.tta)
    paths, missing = (expand_clips if pred.frames else expand_paths)(a.paths)  # clip models: sample folders, GIFs
    failed = list(missing)
    preds = []
    for r in pred.predict_files(paths, top_k=a.top_k):
        if isinstance(r, DecodeError):
            failed.append(r)
            continue
        if a.min_confidence is not None and r.prob < a.min_confidence:
            r.label = "unknown"
        preds.append(r)
        if not a.json:
            tops = "  ".join(f"{t['label']} {t['prob']:.3f}" for t in r.top_k[: a.top_k])
            print(f"{r.path}\t{r.label}\t{r.prob:.4f}\t{tops}")
    if a.json:
        print(json.dumps([p.to_json() for p in preds], indent=1))
    if a.csv:
        write_csv(a.csv, preds, a.top_k)
    for f in failed:
        print(f"error: {f.path}: {f.reason}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(paths) + len(missing)} input(s) could not be predicted", file=sys.stderr)
    if not paths and not missing:
        print("error: no image files found in the given paths", file=sys.stderr)
        return 1
    return 1 if failed else 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="class names and probabilities for images",
        description="Predict images with a checkpoint alone. PATHs may be image files, folders (recursed) or "
        "globs. Unreadable images are reported by name and skipped; the exit status is 1 if any failed. "
        "For a clip model (cnn_rnn, cnn_avg) each PATH is a sample folder of frames, a folder of such folders, "
        "or an animated GIF/WebP.",
        formatter_class=RAW,
    )
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--top-k", type=int, default=3, help="how many classes to show per image (default 3)")
    p.add_argument("--csv", metavar="FILE", help="write path,label,prob and the top-k to a CSV file")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    p.add_argument("--min-confidence", type=float, metavar="P", help="answer 'unknown' when the top probability is below P")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    _add_runtime_options(p)
    p.set_defaults(func=cmd_predict)


# ---------------------------------------------------------------------------------------------- models
def cmd_models(a: argparse.Namespace) -> int:
    from ..models import count_flops, create_model, get_entry, list_models

    print(f"{'name':<22}{'family':<13}{'params':>12}{'MFLOPs/img':>12}  description   (input {a.channels}x{a.input_size}x{a.input_size})")
    for name in list_models():
        e = get_entry(name)
        try:
            m = create_model(name, a.num_classes, a.channels, a.input_size)
            params = sum(p.numel() for p in m.parameters())
            flops = count_flops(m, a.channels, a.input_size, getattr(m, "frames", None)) / 1e6
            print(f"{name:<22}{e.family:<13}{params:>12,}{flops:>12.1f}  {e.description}")
        except Exception as ex:  # e.g. a net that needs larger images
            print(f"{name:<22}{e.family:<13}{'-':>12}{'-':>12}  {e.description} [{ex}]")
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the models with parameters and FLOPs",
                       description="List every registered model with its parameter count and forward FLOPs per image.")
    p.add_argument("--input-size", type=int, default=28)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--num-classes", type=int, default=10)
    p.set_defaults(func=cmd_models)


# --------------------------------------------------------------------------------------------- explain
def cmd_explain(a: argparse.Namespace) -> int:
    from ..data.decode import DecodeError
    from ..explain import explain_files

    n_ok, failed = 0, []
    for r in explain_files(a.checkpoint, a.paths, a.out, a.method, a.target, a.layer, a.device):
        if isinstance(r, DecodeError):
            failed.append(r)
            continue
        e, png, _ = r
        n_ok += 1
        what = f"predicted {e.predicted_label} {e.predicted_prob:.4f}"
        if e.target != e.predicted:
            what += f"  explained {e.target_label} {e.target_prob:.4f}"
        print(f"{e.path}\t{png}\t{what}")
    for f in failed:
        print(f"error: {f.path}: {f.reason}", file=sys.stderr)
    if not n_ok and not failed:
        print("error: no image files found in the given paths", file=sys.stderr)
        return 1
    print(f"{n_ok} explanation(s) ({a.method}) written to {a.out}" + (f"; {len(failed)} input(s) failed" if failed else ""),
          file=sys.stderr)
    return 1 if failed else 0


def _add_explain(sub: argparse._SubParsersAction) -> None:
    from ..explain import METHODS

    p = sub.add_parser(
        "explain", help="heatmaps of where the model found its evidence",
        description="Explain predictions with Captum. For each input writes OUT/<stem>_<method>.png (the heatmap "
        "over the image, with the class and its calibrated probability) and OUT/<stem>_<method>.npy (the heatmap, "
        "float32, H x W at the input image's own size, in [0, 1]; the margins a centre crop cut off are 0). "
        "The predicted class is explained unless --target names another. Grad-CAM uses the layer the model "
        "names; gradient methods work for every model, rnn_rows and clip models included (clips: T x S x S).",
        epilog="examples:\n  pixclass explain runs/demo/best.safetensors shoe.png --out explained/\n"
        "  pixclass explain runs/demo/best.safetensors photos/ --method integrated-gradients --target Sneaker --out ex/",
        formatter_class=RAW,
    )
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (recursed) or globs")
    p.add_argument("--method", default="gradcam", choices=METHODS, help="attribution method (default gradcam)")
    p.add_argument("--target", metavar="CLASS", help="explain this class (a name, or an index) instead of the predicted one")
    p.add_argument("--layer", metavar="NAME", help="Grad-CAM layer (a module name such as stages.1), instead of the model's own choice")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG and NPY files")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.set_defaults(func=cmd_explain)


# ------------------------------------------------------------------------------------------- calibrate
def cmd_calibrate(a: argparse.Namespace) -> int:
    from ..calibrate import calibrate_checkpoint

    s = calibrate_checkpoint(a.checkpoint, a.data, a.split, device=a.device, out=a.out, progress=not a.quiet)
    print(f"temperature {s['previous_temperature']:.4f} -> {s['temperature']:.4f}  (fit on {int(s['n'])} {s['split']} images)")
    print(f"on those images, uncalibrated -> calibrated: NLL {s['nll_before']:.4f} -> {s['nll_after']:.4f}   "
          f"ECE {s['ece_before']:.4f} -> {s['ece_after']:.4f}")
    print(f"written to {s['checkpoint']}")
    return 0


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate", help="refit the checkpoint's temperature on a validation split",
        description="Fit the temperature T (softmax(logits / T)) that minimises the negative log-likelihood on "
        "--split of DATA and store it in the checkpoint (rewritten atomically, or copied to --out). DATA is split "
        "with the run's own settings, so a plain folder gives back the validation images the model was not "
        "trained on. Every probability pixclass reports afterwards uses T.",
        formatter_class=RAW,
    )
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--split", default="val", help="split to fit on (default: val)")
    p.add_argument("--out", metavar="FILE", help="write the calibrated checkpoint here instead of rewriting CKPT")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_calibrate)


# ---------------------------------------------------------------------------------------------- report
def cmd_report(a: argparse.Namespace) -> int:
    from ..report import build_report

    print(f"report: {build_report(a.run_dir, data=a.data, device=a.device)}")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="(re)write a run folder's report.html",
        description="Write RUN_DIR/report.html, one self-contained page (images embedded, readable offline): "
        "dataset summary, learning curves, confusion matrix, per-class precision/recall/F1, most-confused pairs, "
        "reliability diagram, the worst validation mistakes with their Grad-CAM, config and timing. The plots "
        "are also written as PNG files beside it. The data is found through split_manifest.json (or --data).",
        formatter_class=RAW,
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data", metavar="DATA", help="the run's data, when it is no longer where training found it")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.set_defaults(func=cmd_report)


REGISTER: list[Callable[[argparse._SubParsersAction], None]] = [_add_train, _add_evaluate, _add_predict, _add_models,
                                                                _add_explain, _add_calibrate, _add_report, register_lr_find]
