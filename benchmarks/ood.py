"""Unknown inputs: which out-of-distribution score pixclass stores, measured on offline-built pairs.

For each in-distribution set (built by ``datasets.py``: scikit-learn digits, Fashion-MNIST 1k,
scikit-image photo patches) the default model is trained with the default command
(``pixclass.train(DATA)``, no options), and every candidate score is computed from its penultimate
features (``forward_features``) and logits on the validation split (where thresholds are fitted),
the test split (in-distribution) and outlier sets built here (never seen when fitting):

* ``noise``: uniform RGB noise; ``blank``: one colour per image (white and black included);
* ``letters``: A-Z, a-z drawn with DejaVu Sans (white on black, random size/place/angle);
* ``fashion`` / ``digits``: the other dataset (far-OOD for the photos, a near-ish shift between the
  two grey sets); ``photos``: patches of scikit-image pictures that no training set uses;
  ``textures``: brick, grass, gravel crops.

Candidates (higher = more typical): ``msp`` max softmax (Hendrycks & Gimpel 2017), ``energy``
logsumexp of the logits (Liu et al. 2020), ``maha`` class-conditional Gaussians with a shared
covariance (Lee et al. 2018; scikit-learn's Ledoit-Wolf estimate), ``maha_norm`` the same on
L2-normalised features (Mahalanobis++, Mueller & Hein 2025), ``knn`` minus the cosine distance to the
k-th nearest normalised training feature (Sun et al. 2022; what pixclass stored before), on the full
bank and on compact banks, and ``a+b``: the lower of the two validation percentiles. ``pixclass``: what
pixclass fits and its Predictor reports (``infer.ood``: ``maha_norm`` to the predicted class's mean, on
the quarter of the whitened directions with the largest precision, ``ood.RANK``).
``early_stem`` / ``early_stage1``: ``maha`` on the pooled stem / first-stage outputs (Lee et al.'s
multi-layer variant), ``early_gram_stage1/2`` on the stages' channel Gram matrices; ``pixclass+<layers>``: the lowest of their validation percentiles and ``pixclass``.
``photos_iid`` is the photos set split i.i.d. (``--sets photos_iid``), as pixclass splits a user's folder.
Colour models: ``pixclass`` is then the feature score joined to the pixels' colour statistics
(``ood.PixelStats``), ``pixclass_features`` the feature score alone (what it was before);
``pixels_<set>`` Mahalanobis on a set of pixel statistics alone (``PIXEL_SETS``), ``features+<set>``
joined to ``pixclass_features`` by the lower share. ``react<q>_maha_norm``: ReAct (Sun et al. 2021,
features clipped at the q quantile of the training activations) before ``maha_norm``;
``feature_norm``: the features' L2 norm.

Per pair: AUROC and FPR95 (share of outliers accepted at the threshold keeping 95% of the in-
distribution test images; OpenOOD's protocol), and the deployed figures: the threshold fitted on the
validation split (keep 95%), then the share of test images and of each outlier set flagged, and the
accuracy on accepted test images over the accuracy on all.

    .venv/bin/python benchmarks/ood.py            # all sets (a few minutes of training each)
    .venv/bin/python benchmarks/ood.py --quick    # digits only, 3 epochs
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import datasets
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

import pixclass
from pixclass import checkpoint as ckpt
from pixclass.config import build_config
from pixclass.data.dataset import load_data
from pixclass.data.decode import eval_transform
from pixclass.infer import ood
from pixclass.infer.calibrate import checkpoint_data_config
from pixclass.infer.predictor import Predictor

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
N_OUT = 300  # images per outlier set
KEEP = 0.95
RETRAIN = False
SEED = 0  # --seed: the training seed (0: the default run); another seed writes results/ood_seed<N>


# ------------------------------------------------------------------------------------ outlier sets
def noise(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(n)]


def blank(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    cols = [(255, 255, 255), (0, 0, 0)] + [tuple(rng.integers(0, 256, 3)) for _ in range(n - 2)]
    return [np.full((64, 64, 3), c, np.uint8) for c in cols]


def letters(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    out = []
    for i in range(n):
        im = Image.new("L", (64, 64), 0)
        size = int(rng.integers(30, 56))
        font = ImageFont.truetype(FONT, size)
        ImageDraw.Draw(im).text(
            (int(rng.integers(0, 16)), int(rng.integers(-8, 10))), chars[i % len(chars)], 255, font=font
        )
        im = im.rotate(float(rng.uniform(-20, 20)))
        out.append(np.stack([np.asarray(im)] * 3, -1))
    return out


def crops(pics: list[np.ndarray], n: int, rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for i in range(n):
        pic = pics[i % len(pics)]
        if pic.ndim == 2:
            pic = np.stack([pic] * 3, -1)
        pic = pic[..., :3]
        h, w = pic.shape[:2]
        side = int(rng.integers(40, min(h, w, 160)))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        out.append(np.asarray(Image.fromarray(pic[y : y + side, x : x + side]).resize((64, 64))))
    return out


def other_photos(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    import skimage.data as d

    # pictures that no training set here uses
    return crops(
        [d.camera(), d.coins(), d.page(), d.clock(), d.colorwheel(), d.horse().astype(np.uint8) * 255], n, rng
    )


def textures(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    import skimage.data as d

    return crops([d.brick(), d.grass(), d.gravel()], n, rng)


def folder_images(name: str) -> Callable[[int, np.random.Generator], list[np.ndarray]]:
    """Test images of another benchmark dataset, as an outlier set."""

    def make(n: int, rng: np.random.Generator) -> list[np.ndarray]:
        files = sorted((datasets.build(name) / "test").rglob("*.png"))
        pick = rng.choice(len(files), min(n, len(files)), replace=False)
        return [np.asarray(Image.open(files[i]).convert("RGB")) for i in pick]

    return make


OUTLIERS: dict[str, Callable[[int, np.random.Generator], list[np.ndarray]]] = {
    "noise": noise,
    "blank": blank,
    "letters": letters,
    "photos": other_photos,
    "textures": textures,
}
#: in-distribution set -> the other benchmark datasets used as outlier sets
OTHER_SETS = {
    "digits": ["fm1k"],
    "fm1k": ["digits"],
    "photos": ["fm1k", "digits"],
    "photos_iid": ["fm1k", "digits"],
}


# ----------------------------------------------------------------------------------------- features
@torch.no_grad()
def features_logits(model: torch.nn.Module, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor):
    """uint8 (N, C, S, S) -> (penultimate features (N, D), logits (N, K)), in batches of 256."""
    fs, ls = [], []
    model.eval()
    for i in range(0, len(x), 256):
        xb = (x[i : i + 256].float() / 255 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
        f = model.forward_features(xb)
        fs.append(f.float())
        ls.append(model.forward_head(f).float())
    return torch.cat(fs), torch.cat(ls)


@torch.no_grad()
def early_features(
    model: torch.nn.Module, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Globally pooled (max, mean) outputs of the ResCNN's stem and first stage, the early layers of
    Lee et al. 2018's multi-layer Mahalanobis, and the channel Gram matrices (upper triangle, signed
    square root; Sastry & Oore 2020) of its first two stages; {} for another model."""
    if not hasattr(model, "stem") or not hasattr(model, "stages") or len(model.stages) < 2:
        return {}
    out: dict[str, list[torch.Tensor]] = {"stem": [], "stage1": [], "gram_stage1": [], "gram_stage2": []}
    model.eval()
    for i in range(0, len(x), 256):
        h0 = model.stem((x[i : i + 256].float() / 255 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1))
        h1 = model.stages[0](h0)
        h2 = model.stages[1](h1)
        for name, h in (("stem", h0), ("stage1", h1)):
            out[name].append(torch.cat([h.amax((2, 3)), h.mean((2, 3))], 1).float())
        for name, h in (("gram_stage1", h1), ("gram_stage2", h2)):
            f = h.flatten(2).float()
            g = f @ f.transpose(1, 2) / f.shape[2]
            iu = torch.triu_indices(g.shape[1], g.shape[1])
            g = g[:, iu[0], iu[1]]
            out[name].append(g.sign() * g.abs().sqrt())
    return {k: torch.cat(v) for k, v in out.items()}


def maha_scorer(train_f: torch.Tensor, train_y: torch.Tensor) -> Callable[[torch.Tensor], np.ndarray]:
    """Minus the Mahalanobis distance to the nearest class mean, shared Ledoit-Wolf covariance."""
    mus = _class_means(train_f, train_y)
    prec = torch.from_numpy(LedoitWolf().fit((train_f - mus[train_y]).numpy()).precision_).float()

    def score(f: torch.Tensor) -> np.ndarray:
        d = f[:, None, :] - mus[None]
        return (-torch.einsum("nkd,de,nke->nk", d, prec, d).min(1).values).numpy()

    return score


#: Pixel statistic sets measured on colour models: ``colour3`` (what pixclass stores, ``ood.PixelStats``:
#: log mean |r - g|, |g - b|, |b - r|), ``colour6_var`` (also the log largest difference of each pair
#: and log channel variances), ``basic`` (channel means, log standard deviations, log mean and largest
#: chroma).
PIXEL_SETS = ("colour3", "colour6_var", "basic")


def pixel_set(x: np.ndarray, name: str) -> np.ndarray:
    """uint8 (N, 3, S, S) -> (N, P) pixel statistics of set ``name`` (``PIXEL_SETS``), in grey levels."""
    v = x.astype(np.float64) / 255
    eps = ood.PIXEL_EPS
    pairs = np.abs(np.stack([v[:, 0] - v[:, 1], v[:, 1] - v[:, 2], v[:, 2] - v[:, 0]], 1))  # (N, 3, S, S)
    cols = [np.log(pairs.mean((2, 3)) + eps)]
    if name == "colour6_var":
        cols += [np.log(pairs.max((2, 3)) + eps), np.log(v.var((2, 3)) + eps**2)]
    elif name == "basic":
        chroma = v.max(1) - v.min(1)
        cols = [
            v.mean((2, 3)),
            np.log(v.std((2, 3)) + eps),
            np.log(chroma.mean((1, 2)) + eps)[:, None],
            np.log(chroma.max((1, 2)) + eps)[:, None],
        ]
    return np.concatenate(cols, 1)


def store_tensor(split: Any) -> torch.Tensor:
    return split.store.take(torch.arange(len(split)))


# ------------------------------------------------------------------------------------------- scores
def knn_score(bank: torch.Tensor, f: torch.Tensor, k: int) -> np.ndarray:
    """Minus the cosine distance to the k-th nearest normalised bank feature (higher = more typical)."""
    fn = torch.nn.functional.normalize(f, dim=1)
    sim = fn @ bank.T
    k = min(k, bank.shape[0])
    return sim.topk(k, dim=1).values[:, -1].numpy()


def make_scorers(
    train_f: torch.Tensor, train_y: torch.Tensor, banks: list[int], seed: int = 0
) -> dict[str, Callable]:
    """name -> (features, logits) -> score; fitted on the training features."""
    bank = torch.nn.functional.normalize(train_f, dim=1)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(bank), generator=g)
    # compact banks as pixclass stores them: a seeded sample of the training features, in float16
    small = {m: bank[order[:m]].half().float() for m in banks if m < len(bank)}
    lw = LedoitWolf().fit((train_f - _class_means(train_f, train_y)[train_y]).numpy())
    prec = torch.from_numpy(lw.precision_).float()
    mus = _class_means(train_f, train_y)

    def maha(f: torch.Tensor, _z: torch.Tensor) -> np.ndarray:
        d = f[:, None, :] - mus[None]  # (N, K, D)
        m = torch.einsum("nkd,de,nke->nk", d, prec, d)
        return (-m.min(1).values).numpy()

    # Mahalanobis++ (Mueller & Hein 2025): the same on L2-normalised features
    u_tr = torch.nn.functional.normalize(train_f, dim=1)
    mus_n = _class_means(u_tr, train_y)
    prec_n = torch.from_numpy(LedoitWolf().fit((u_tr - mus_n[train_y]).numpy()).precision_).float()

    def maha_norm(f: torch.Tensor, _z: torch.Tensor) -> np.ndarray:
        d = torch.nn.functional.normalize(f, dim=1)[:, None, :] - mus_n[None]
        return (-torch.einsum("nkd,de,nke->nk", d, prec_n, d).min(1).values).numpy()

    out: dict[str, Callable] = {
        "msp": lambda f, z: z.softmax(1).max(1).values.numpy(),
        "energy": lambda f, z: torch.logsumexp(z, 1).numpy(),
        "maha": maha,
        "maha_norm": maha_norm,
        "knn1": lambda f, z: knn_score(bank, f, 1),
        "knn5": lambda f, z: knn_score(bank, f, 5),
        "knn10": lambda f, z: knn_score(bank, f, 10),
    }
    for m, b in small.items():
        out[f"knn1_bank{m}"] = lambda f, z, b=b: knn_score(b, f, 1)
    return out


def _class_means(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    k = int(y.max()) + 1
    return torch.stack([f[y == c].mean(0) for c in range(k)])


def percentile(ref: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Share of the reference (validation) scores below each score: 0 = less typical than all."""
    return np.searchsorted(np.sort(ref), s, side="left") / len(ref)


def fpr95(s_in: np.ndarray, s_out: np.ndarray) -> float:
    t = np.quantile(s_in, 1 - KEEP)
    return float((s_out >= t).mean())


def auroc(s_in: np.ndarray, s_out: np.ndarray) -> float:
    return float(roc_auc_score(np.r_[np.ones(len(s_in)), np.zeros(len(s_out))], np.r_[s_in, s_out]))


# ------------------------------------------------------------------------------------------- a pair
def train_default(name: str, root: Path, epochs: int | None, log: Callable[[str], None]) -> Path:
    """The default run on ``root/train``, kept under the benchmark cache (``runs-ood/<name>``) and reused:
    scoring is re-run far more often than training (``--retrain`` trains again)."""
    overrides: dict[str, Any] = {"epochs": epochs} if epochs else {}
    if SEED:
        overrides["seed"] = SEED
    cfg = build_config(str(root / "train"), overrides=overrides or None)
    tag = (f"-e{epochs}" if epochs else "") + (f"-s{SEED}" if SEED else "")
    out = datasets.bench_root() / "runs-ood" / (name + tag)
    if (out / "best.safetensors").is_file() and not RETRAIN:
        log(f"{name}: reusing {out / 'best.safetensors'}")
        return out / "best.safetensors"
    t0 = time.perf_counter()
    res = pixclass.train(
        str(root / "train"),
        cfg,
        out=out,
        resume=(out / "resume.safetensors").is_file() and not RETRAIN,
        progress=False,
        log=lambda m: None,
        report=False,
    )
    log(f"{name}: trained {cfg.model} in {time.perf_counter() - t0:.0f} s -> {res.best}")
    return res.best


def evaluate_set(
    name: str, epochs: int | None, banks: list[int], log: Callable[[str], None]
) -> dict[str, Any]:
    root = datasets.build(name)
    best = train_default(name, root, epochs, log)
    c = ckpt.load(best)
    model = c.build_model().eval()
    mean = torch.tensor(c.card.preprocess.mean)
    std = torch.tensor(c.card.preprocess.std)
    size, ch = c.card.input_size, c.card.channels
    ds = load_data(str(root / "train"), checkpoint_data_config(c.card), progress=False, for_training=False)
    test = load_data(
        str(root / "test"),
        checkpoint_data_config(c.card, val_fraction=0.0, test_fraction=0.0),
        progress=False,
        for_training=False,
    )
    tr, va = ds.splits["train"], ds.splits["val"]
    te = test.splits["train"]
    remap = torch.tensor([c.classes.index(k) for k in test.classes])
    f_tr, _ = features_logits(model, store_tensor(tr), mean, std)
    f_va, z_va = features_logits(model, store_tensor(va), mean, std)
    f_te, z_te = features_logits(model, store_tensor(te), mean, std)
    y_te = remap[te.labels]
    scorers = make_scorers(f_tr, tr.labels, banks)
    rng = np.random.default_rng(0)
    outs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    makers = dict(OUTLIERS)
    for other in OTHER_SETS.get(name, []):
        makers[other] = folder_images(other)
    outs_x: dict[str, torch.Tensor] = {}
    for oname, make in makers.items():
        x = torch.from_numpy(np.stack([eval_transform(im, size, ch) for im in make(N_OUT, rng)]))
        outs_x[oname] = x
        outs[oname] = features_logits(model, x, mean, std)
    e_tr, e_va, e_te = (early_features(model, store_tensor(s), mean, std) for s in (tr, va, te))
    e_out = {o: early_features(model, x, mean, std) for o, x in outs_x.items()}
    raw_pix, raw_feats, speed = pixclass_score(c, tr, va, te, outs_x)
    acc_all = float((z_te.argmax(1) == y_te).float().mean())
    res: dict[str, Any] = {
        "dataset": name,
        "about": datasets.DATASETS[name][1],
        "model": c.card.model.name,
        "n_train": len(tr),
        "n_val": len(va),
        "n_test": len(te),
        "test_acc": acc_all,
        "scores": {},
        "speed": speed,
    }
    raw = {
        s: (fn(f_va, z_va), fn(f_te, z_te), {o: fn(*fz) for o, fz in outs.items()})
        for s, fn in scorers.items()
    }
    # the combination: the lower of the two validation percentiles
    for a, b in (("knn1", "energy"), ("knn1", "maha"), ("knn1", "maha_norm")):
        va_a, te_a, out_a = raw[a]
        va_b, te_b, out_b = raw[b]

        def comb(sa: np.ndarray, sb: np.ndarray) -> np.ndarray:
            return np.minimum(percentile(va_a, sa), percentile(va_b, sb))  # noqa: B023

        raw[f"{a}+{b}"] = (
            comb(va_a, va_b),
            comb(te_a, te_b),
            {o: comb(out_a[o], out_b[o]) for o in out_a},
        )
    raw["pixclass"] = raw_pix
    if raw_feats is not None:
        raw["pixclass_features"] = raw_feats
    # colour statistics of the pixels alone (Mahalanobis to the training images' mean, Ledoit-Wolf), and
    # joined to the feature score by the lower of the two percentiles (references: validation and
    # training images), for the statistic sets measured (``PIXEL_SETS``; ``colour3`` is what is stored)
    if raw_feats is not None:
        xs = {"tr": store_tensor(tr).numpy(), "va": store_tensor(va).numpy(), "te": store_tensor(te).numpy()}
        for set_name in PIXEL_SETS:
            st = {k: torch.from_numpy(pixel_set(v, set_name)).float() for k, v in xs.items()}
            fn = maha_scorer(st["tr"], torch.zeros(len(st["tr"]), dtype=torch.long))
            s_va, s_te = fn(st["va"]), fn(st["te"])
            s_out = {
                o: fn(torch.from_numpy(pixel_set(x.numpy(), set_name)).float()) for o, x in outs_x.items()
            }
            ref = np.r_[s_va, fn(st["tr"])]
            raw[f"pixels_{set_name}"] = (s_va, s_te, s_out)

            def joined(p: np.ndarray, q: np.ndarray, ref: np.ndarray = ref) -> np.ndarray:
                return np.minimum(p, percentile(ref, q))

            a_va, a_te, a_out = raw_feats
            raw[f"features+{set_name}"] = (
                joined(a_va, s_va),
                joined(a_te, s_te),
                {o: joined(a_out[o], s_out[o]) for o in s_out},
            )
    # ReAct (Sun et al. 2021): the features clipped at a quantile of the training activations, then the
    # Mahalanobis++ score; and the feature norm (higher = more typical) -- the cheap literature rows
    for q in (0.9, 0.99):
        clip = float(torch.quantile(f_tr.flatten()[:1_000_000], q))
        sc = make_scorers(f_tr.clamp(max=clip), tr.labels, [])["maha_norm"]
        raw[f"react{q:g}_maha_norm"] = (
            sc(f_va.clamp(max=clip), z_va),
            sc(f_te.clamp(max=clip), z_te),
            {o: sc(f.clamp(max=clip), z) for o, (f, z) in outs.items()},
        )
    raw["feature_norm"] = (
        f_va.norm(dim=1).numpy(),
        f_te.norm(dim=1).numpy(),
        {o: f.norm(dim=1).numpy() for o, (f, _) in outs.items()},
    )
    # multi-layer (Lee et al. 2018): Mahalanobis on pooled early features, alone and combined with the
    # stored score by the lower of the two validation percentiles (flagged when either layer is atypical)
    for layer in e_tr:
        fn = maha_scorer(e_tr[layer], tr.labels)
        raw[f"early_{layer}"] = (
            fn(e_va[layer]),
            fn(e_te[layer]),
            {o: fn(e[layer]) for o, e in e_out.items()},
        )
    layer_sets = [[layer] for layer in e_tr] + ([["stem", "stage1"]] if e_tr else [])
    for layers in layer_sets:
        ups = [raw[f"early_{layer}"] for layer in layers]  # raw_pix is a percentile already

        def comb(pix: np.ndarray, get: Callable[[tuple], np.ndarray], ups: list = ups) -> np.ndarray:
            return np.min([pix] + [percentile(u[0], get(u)) for u in ups], 0)

        raw["pixclass+" + "+".join(layers)] = (
            comb(raw_pix[0], lambda u: u[0]),
            comb(raw_pix[1], lambda u: u[1]),
            {o: comb(so, lambda u, o=o: u[2][o]) for o, so in raw_pix[2].items()},
        )
    for s, (s_va, s_te, s_out) in raw.items():
        stored = s in ("pixclass", "pixclass_features")  # in_distribution: the stored threshold
        thr = float(ood.threshold(c.card) or 0) if stored else np.quantile(s_va, 1 - KEEP)
        keep_te = s_te >= thr
        acc_acc = float((z_te.argmax(1) == y_te)[torch.from_numpy(keep_te)].float().mean())
        res["scores"][s] = {
            "flagged_test": float(1 - keep_te.mean()),
            "acc_accepted_over_all": acc_acc / acc_all if acc_all else float("nan"),
            "outliers": {
                o: {"auroc": auroc(s_te, so), "fpr95": fpr95(s_te, so), "flagged": float((so < thr).mean())}
                for o, so in s_out.items()
            },
        }
    return res


def pixclass_score(
    c: Any, tr: Any, va: Any, te: Any, outs_x: dict[str, torch.Tensor]
) -> tuple[tuple, tuple | None, dict]:
    """What pixclass itself fits (``ood.fit_model``, as training does) and reports (the Predictor's
    in_distribution, through its default runtime); a colour model's feature score without its pixel
    statistics (None for a grey model); and the Predictor's speed with and without the score."""
    model = c.build_model().eval()
    mean, std = torch.tensor(c.card.preprocess.mean), torch.tensor(c.card.preprocess.std)
    fitted = ood.fit_model(
        model, mean, std, tr.store, va.store, torch.device("cpu"), tta=c.card.tta == "hflip"
    )
    c.card = ood.store(c.card, c.state_dict, fitted)
    with_score = Predictor(c.build_model(), c.card, extras=c.state_dict)
    plain = Predictor(c.build_model(), c.card)

    def p(x: Any) -> np.ndarray:
        out = with_score.in_distribution(x)
        assert out is not None
        return out.numpy()

    scores = (p(va.store), p(te.store), {o: p(x) for o, x in outs_x.items()})
    feats = None
    if all(k in c.state_dict for k in ood.PIXEL_TENSORS):  # a colour model: its feature score alone too
        no_pixels = {k: v for k, v in c.state_dict.items() if k not in ood.PIXEL_TENSORS}
        alone = Predictor(c.build_model(), c.card, extras=no_pixels)

        def q(x: Any) -> np.ndarray:
            out = alone.in_distribution(x)
            assert out is not None
            return out.numpy()

        feats = (q(va.store), q(te.store), {o: q(x) for o, x in outs_x.items()})
    speed = predictor_speed(plain, with_score, te.store.take(torch.arange(min(256, len(te)))))
    return scores, feats, speed


def predictor_speed(
    plain: Predictor, scored: Predictor, x256: torch.Tensor, rounds: int = 5
) -> dict[str, Any]:
    """Batch-1 p50 latency and batch-256 images/s of ``rows_from_uint8`` without and with the score,
    alternated round by round (the machine is shared: only the ratio in one run means something)."""
    x256 = x256[torch.arange(256) % len(x256)]
    x1 = x256[:1]
    res: dict[str, dict[str, list[float]]] = {
        "plain": {"b1": [], "b256": []},
        "scored": {"b1": [], "b256": []},
    }
    for _ in range(rounds):
        for name, pr in (("plain", plain), ("scored", scored)):
            lat = common.latencies(lambda pr=pr: pr.rows_from_uint8(x1), 200, 20, 2.0)
            res[name]["b1"].append(float(np.median(lat)))
            t = common.latencies(lambda pr=pr: pr.rows_from_uint8(x256, 256), 20, 2, 2.0, min_calls=5)
            res[name]["b256"].append(256 / float(np.median(t)))
    out: dict[str, Any] = {"backend": scored.backend, "rounds": rounds}
    for name in res:
        out[f"{name}_b1_p50_ms"] = 1e3 * float(np.median(res[name]["b1"]))
        out[f"{name}_b256_img_s"] = float(np.median(res[name]["b256"]))
    out["b1_slowdown"] = out["scored_b1_p50_ms"] / out["plain_b1_p50_ms"] - 1
    out["b256_slowdown"] = out["plain_b256_img_s"] / out["scored_b256_img_s"] - 1
    out["bytes_added"] = int((scored.unknown_info or {})["bytes"])
    return out


# ------------------------------------------------------------------------------------------- report
def markdown(results: list[dict[str, Any]], ctx: dict[str, Any]) -> str:
    lines = [
        "# Unknown inputs: out-of-distribution scores",
        "",
        f"`PYTHONPATH=src python {' '.join(['benchmarks/ood.py', *sys.argv[1:]])}` -- the default model trained "
        f"with the default command{f' and --seed {SEED}' if SEED else ''} on each in-distribution set; threshold",
        "fitted on its validation split keeping 95%; outlier sets never seen.",
        f"Machine: {ctx.get('cpu_model', '?')}, shared with other jobs, load average {ctx.get('load', '?')} "
        "(start, end; speed: only the ratios alternated in one run mean something).",
        "",
        "`pixclass`: what pixclass fits and its Predictor reports (Mahalanobis on normalised features to the "
        f"predicted class's mean, the {ood.RANK:g} share of the whitened directions with the largest precision). It and the "
        "`a+b` rows are percentiles in [0, 1]: where over 5% of test images tie at 0 (photos), their FPR95 reads "
        "1.00 from the ties alone; read AUROC and flagged there.",
        "",
    ]
    for r in results:
        lines += [
            f"## {r['dataset']}: {r['about']}",
            "",
            f"model {r['model']}, {r['n_train']} training / {r['n_val']} validation / {r['n_test']} test images, "
            f"test accuracy {r['test_acc']:.4f}",
            "",
            "Predictor speed ({backend}), without -> with the score, alternated in one run: batch 1 p50 "
            "{plain_b1_p50_ms:.3f} -> {scored_b1_p50_ms:.3f} ms ({b1_slowdown:+.1%}); batch 256 {plain_b256_img_s:.0f} -> "
            "{scored_b256_img_s:.0f} img/s ({b256_slowdown:+.1%} time); checkpoint +{bytes_added:,} bytes".format(
                **r["speed"]
            ),
            "",
        ]
        onames = list(next(iter(r["scores"].values()))["outliers"])
        lines.append(
            "| score | test flagged | acc kept/all | "
            + " | ".join(f"{o} AUROC / FPR95 / flagged" for o in onames)
            + " |"
        )
        lines.append("|---" * (3 + len(onames)) + "|")
        for s, v in r["scores"].items():
            cells = [
                f"{v['outliers'][o]['auroc']:.3f} / {v['outliers'][o]['fpr95']:.2f} / {v['outliers'][o]['flagged']:.2f}"
                for o in onames
            ]
            lines.append(
                f"| {s} | {v['flagged_test']:.3f} | {v['acc_accepted_over_all']:.4f} | "
                + " | ".join(cells)
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--sets", default="digits,fm1k,photos", help="in-distribution datasets (datasets.py names)"
    )
    ap.add_argument("--epochs", type=int, default=None, help="override the default epochs (quick runs)")
    ap.add_argument(
        "--banks", default="256,512,1024", help="compact bank sizes measured beside the full one (k=1)"
    )
    ap.add_argument("--quick", action="store_true", help="digits only, 3 epochs")
    ap.add_argument("--retrain", action="store_true", help="train again instead of reusing the cached runs")
    ap.add_argument("--seed", type=int, default=0, help="training seed (it also draws the validation split)")
    ap.add_argument(
        "--rank",
        type=float,
        default=ood.RANK,
        help="share of the whitened directions the pixclass row keeps (ood.RANK; a candidate, measured)",
    )
    ap.add_argument("--name", default=None, help="results file stem (default ood, ood_seed<N>)")
    a = ap.parse_args()
    ood.RANK = a.rank
    global RETRAIN, SEED
    RETRAIN, SEED = a.retrain, a.seed
    if a.quick:
        a.sets, a.epochs = "digits", 3
    common.set_threads(common.usable_cpus())
    load0 = os.getloadavg()[0]
    results = []
    for name in a.sets.split(","):
        results.append(
            evaluate_set(
                name,
                a.epochs,
                [int(b) for b in a.banks.split(",")],
                lambda m: print(m, file=sys.stderr, flush=True),
            )
        )
        print(markdown(results[-1:], {}), flush=True)
    ctx = common.context(torch.get_num_threads())
    ctx["load"] = f"{load0:.1f}, {os.getloadavg()[0]:.1f}"
    name = a.name or "ood" + (f"_seed{SEED}" if SEED else "")
    common.write_results(
        name, {"context": ctx, "seed": SEED, "results": results}, markdown(results, ctx), a.quick
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
