"""``pixclass data check``, ``pixclass data audit`` and ``pixclass data sample``."""

from __future__ import annotations

import argparse
import json
import sys

from .options import EPILOG, RAW, add_data_options, add_device, add_quiet, data_config, int_in, show_progress


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser(
        "data", help="inspect a dataset", description="Inspect a dataset.", epilog=EPILOG, formatter_class=RAW
    )
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    chk = dsub.add_parser(
        "check",
        help="decode every image; report classes, broken files, duplicates",
        description="Decode every file of DATA and report images per class, sizes and modes, unreadable "
        "files with the reason, exact duplicates (also across classes and splits). Exit status 0 when "
        "the data can be trained on, 1 when it cannot. The folder is never changed unless --quarantine.",
        epilog=EPILOG,
        formatter_class=RAW,
    )
    chk.add_argument("data", metavar="DATA")
    chk.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    chk.add_argument(
        "--quarantine",
        metavar="DIR",
        help="move broken files into DIR (outside DATA) with DIR/manifest.csv; nothing is deleted",
    )
    add_data_options(chk)
    chk.set_defaults(func=run_check)

    register_audit(dsub)

    smp = dsub.add_parser(
        "sample",
        help="write a few images of a split as PNG files",
        description="Write the first N images of a split as PNGs named <index>_<class>.png "
        "(clips: animated GIFs), e.g. to try `pixclass predict` on.",
    )
    smp.add_argument("data", metavar="DATA")
    smp.add_argument("--split", default="test", help="split to sample: train, val or test (default: test)")
    smp.add_argument("-n", type=int_in(1), default=8, help="number of images (default: 8)")
    smp.add_argument("--out", required=True, help="folder to write into (not inside DATA)")
    add_data_options(smp)
    smp.set_defaults(func=run_sample)


def run_check(a: argparse.Namespace) -> int:
    from ..data.check import check_data
    from ..errors import printable
    from ..outputs import refuse_output_in_inputs

    if a.quarantine:
        refuse_output_in_inputs(a.quarantine, [a.data], "--quarantine")
    rep = check_data(
        a.data, data_config(a), quarantine=a.quarantine, progress=not a.json and show_progress(a)
    )
    print(json.dumps(rep.to_json(), indent=1) if a.json else rep.render())
    if not rep.ok:
        problems = printable("; ".join(rep.problems))
        print(f"error: {printable(a.data)}: cannot train on this data: {problems}", file=sys.stderr)
        return 1
    return 0


def run_sample(a: argparse.Namespace) -> int:
    from ..data.dataset import load_data, write_samples
    from ..outputs import refuse_output_in_inputs, writable_folder

    refuse_output_in_inputs(a.out, [a.data], "--out", writes_images=True)
    ds = load_data(a.data, data_config(a), progress=show_progress(a), for_training=False)
    writable_folder(a.out, "--out")
    for p in write_samples(ds, a.split, a.out, a.n):
        print(p)
    return 0


AUDIT_EPILOG = """\
what it writes (into --out, never into DATA):
  audit.json    label_issues (most suspect first: path, label, suggested, score), duplicates (groups:
                paths, splits, kind exact/near, leak), quality (path, flags with their reasons)
  audit.html    a gallery: thumbnails with given and suggested labels, duplicate groups side by side
  relabel.csv   path,label,suggested,score of the suspects: edit `suggested` (empty = leave the image
                out), then `pixclass train DATA --relabel relabel.csv` (or --exclude relabel.csv)

examples:
  pixclass data audit photos/
  pixclass data audit photos/ --out audit/ --json audit.json
  pixclass data audit photos/ --no-labels          # duplicates and quality only: no training
  pixclass data audit photos/ --pretrained         # labels from frozen ImageNet MobileNetV2 features
"""


def register_audit(dsub: argparse._SubParsersAction) -> None:
    from ..train.recipe import (
        AUDIT_EPOCHS,
        AUDIT_FOLDS,
        AUDIT_FROZEN_MODEL,
        AUDIT_MODEL,
    )  # plain data: --help loads no torch

    aud = dsub.add_parser(
        "audit",
        help="find wrong labels, near-duplicates, train/test leakage and poor images",
        description="Audit every image of DATA (all splits). Wrong labels: k models of the default net "
        "are trained, each on all folds but one, and score the images they did not see (or, with ImageNet "
        "weights at hand, k logistic regressions on their frozen features: --pretrained); confident "
        "learning then ranks the labels the models confidently disagree with. Near-duplicates: "
        "perceptual hashes (a resized, re-encoded or brightened copy counts); a group that spans train "
        "and val/test is leakage. Quality: very dark or bright, low contrast, blurry, odd size or "
        "shape, grey images in a colour set. Nothing in DATA is moved, renamed or deleted.",
        epilog=AUDIT_EPILOG + "\n" + EPILOG,
        formatter_class=RAW,
    )
    aud.add_argument("data", metavar="DATA")
    aud.add_argument(
        "--out", help="folder for audit.json, audit.html, relabel.csv (default: runs/audit-<data name>)"
    )
    aud.add_argument("--json", metavar="FILE", help="also write the JSON report to FILE ('-': print it)")
    aud.add_argument(
        "--folds",
        type=int_in(2, 20),
        default=AUDIT_FOLDS,
        help=f"cross-validation folds; fewer when a class has fewer images (default: {AUDIT_FOLDS}, as in "
        "the confident-learning paper)",
    )
    aud.add_argument(
        "--epochs",
        type=int_in(1, 1000),
        default=AUDIT_EPOCHS,
        help=f"epochs of each fold's training run (default: {AUDIT_EPOCHS}; measured in benchmarks/audit.py)",
    )
    aud.add_argument(
        "--model",
        help=f"the net trained on each fold (default: {AUDIT_MODEL}, the fastest that ranked well in "
        "benchmarks/audit.py); with --pretrained, the ImageNet net whose frozen features are used "
        f"(default: {AUDIT_FROZEN_MODEL})",
    )
    aud.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rank labels from a logistic regression on frozen ImageNet features (one pass over the "
        "images; downloaded when not in the torch hub cache) instead of training the folds; default: "
        "chosen from the data when the file is already cached (the log says which and why)",
    )
    aud.add_argument(
        "--weights",
        metavar="FILE",
        help="a local state-dict file (.pth/.safetensors) for the frozen features instead of ImageNet's",
    )
    aud.add_argument(
        "--ranking",
        choices=("self_confidence", "normalized_margin"),
        default="self_confidence",
        help="order of the label issues: the probability of the given label, or its margin over the "
        "likeliest other class (default: self_confidence)",
    )
    aud.add_argument("--no-labels", action="store_true", help="skip the label audit (no training)")
    aud.add_argument("--seed", type=int_in(0), default=0, help="folds and training seed (default: 0)")
    add_device(aud, "auto")
    add_quiet(aud)
    add_data_options(aud)
    aud.set_defaults(func=run_audit)


def run_audit(a: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from ..data.audit_page import write_html, write_json, write_relabel_csv
    from ..outputs import refuse_output_in_inputs, writable_folder
    from ..threads import apply as apply_threads
    from ..threads import choose_threads
    from ..train.audit import AuditConfig, audit

    out = Path(a.out or f"runs/audit-{Path(str(a.data).rstrip('/')).name}")
    refuse_output_in_inputs(out, [a.data], "--out", writes_images=True)
    if a.json and a.json != "-":
        refuse_output_in_inputs(a.json, [a.data], "--json")
    writable_folder(out, "--out")
    acfg = AuditConfig(
        folds=a.folds,
        epochs=a.epochs,
        model=a.model,
        pretrained=a.pretrained,
        weights=a.weights,
        ranking=a.ranking,
        seed=a.seed,
        device=a.device,
        labels=not a.no_labels,
    )
    quiet_json = a.json == "-"
    log = (lambda m: None) if quiet_json else print
    if acfg.labels:  # k training runs: as `train`, one intra-op thread per CPU other processes leave free
        choice = choose_threads()
        apply_threads(choice)
        log(f"threads: {choice.threads} ({choice.reason})")
    rep, pool, _ = audit(a.data, acfg, data_config(a), progress=show_progress(a), log=log)
    report = rep.to_json()
    index = {n: i for i, n in enumerate(pool.names)}
    write_json(report, out / "audit.json")
    write_relabel_csv(report["label_issues"], out / "relabel.csv")
    write_html(report, lambda n: pool.store.take(np.array([index[n]]))[0].numpy(), out / "audit.html")
    if quiet_json:
        print(json.dumps(report, indent=1))
        return 0
    if a.json:
        write_json(report, a.json)
    print(rep.render())
    print(f"wrote {out / 'audit.html'}, {out / 'audit.json'}, {out / 'relabel.csv'}")
    return 0
