"""Near-duplicate images by perceptual hash: groups of images that look the same after a resize, a
re-encode or a brightness change, and whether a group crosses splits (leakage: a test image the model
has seen in training) or carries different labels (a conflict).

Two 64-bit hashes of each decoded image (the uint8 cache the training reads, all images at one size),
computed in batches with numpy/scipy: pHash (the signs of the 8x8 lowest frequencies of a 32x32 DCT
against their median) and dHash (the signs of horizontal differences at 9x8). A pair is near-identical
when both hashes lie within a few bits and the two images' pixels correlate almost perfectly (the
hashes propose cheaply, the correlation confirms: small, simple images such as digits share hashes
within a few bits by chance, and brightness changes move no correlation); images with few neighbours
in hash space (photographs) get a second, looser look among themselves (``LOOSE_BITS``). Hand-written rather than the ``imagehash`` package: that
one hashes one PIL image at a time, and these are already decoded arrays; the definitions are the same.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.fft import dctn
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

#: Largest Hamming distance (of 64 bits) between two pHashes, and between two dHashes, of a pair the
#: hashes propose. Planted copies (benchmarks/audit.py: half size, JPEG q60, brightness x1.25/x0.8) of
#: Fashion-MNIST items lie up to 16 dHash bits apart (JPEG), 96.7% within 12; digits within 8. Each
#: bit more proposes about twice the pairs to confirm (12 bits: 0.3-0.5% of all pairs there).
PHASH_BITS = 12
DHASH_BITS = 12
SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}
#: Smallest pixel correlation (16x16 grey, mean-centred) that confirms a proposed pair: of the two
#: images as they are, or of one blurred (``soft_signature``) against the other as it is. Distinct but
#: alike images (8x8 digits of one writer, plain trousers) correlate up to ~0.99; on digits and
#: Fashion-MNIST JPEG q60 and brightened copies >= 0.995, half-size copies >= 0.997 once the original is
#: blurred alike (0.94 as they are). Measured on the planted copies of benchmarks/audit.py: 0.98 without
#: the blur found 100% / 86% of them with 40 / 20 false groups per 1,000 images (digits / Fashion-MNIST);
#: 0.993 with it 100% / 96.7% with 1.0 / 3.2. Its limit: a JPEG q60 of a tiny (32 px) colour photo
#: correlates 0.89-0.99 (block artefacts at the signature's scale): the isolated look below.
MIN_CORRELATION = 0.993
#: A second, looser look for isolated images. Photographs (textured, colour) are far apart in hash
#: space, so a copy's only neighbours are its own copies; but a JPEG q60 of a 32 px colour photo
#: correlates only 0.89-0.99 with its original (block artefacts at the signature's scale) and may lie
#: 13-16 bits away. Simple images (digits, garments) have dozens of neighbours within 16 bits, and
#: distinct ones correlate up to 0.997, so for them only the strict rule above holds. Two images that
#: each have at most ``ISOLATED_NEIGHBOURS`` others within ``LOOSE_BITS`` on both hashes are a pair
#: at a correlation of ``MIN_CORRELATION_ISOLATED``. Measured on the planted copies of
#: benchmarks/audit.py (results/audit_duplicates): photos 81.3% -> 90.7% of the copies found (JPEG
#: 62% -> 78%), false groups 0 -> 5 (3.9 per 1,000 images; the photos are crops of 7 pictures, so some
#: overlap for real); digits and Fashion-MNIST unchanged (100% / 98.0%, 2 / 10 false groups). At 0.95
#: photos gained 2 points more, Fashion-MNIST 7 false groups.
LOOSE_BITS = 16
ISOLATED_NEIGHBOURS = 3
MIN_CORRELATION_ISOLATED = 0.97
#: Images hashed per batch (bounds the float copies: 4096 x 32 x 32 x 4 bytes = 16 MB).
BATCH = 4096
#: Pairs compared at once in a Hamming scan: a block of rows against all N columns, rows x N <= this
#: (the XOR of two uint64 hashes is 8 bytes a pair: 4M pairs = 32 MB per temporary).
SCAN_PAIRS = 4 * 1024 * 1024


def _grey(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) uint8 -> (B, 1, H, W) float grey in [0, 255]."""
    x = x.float()
    return x.mean(1, keepdim=True) if x.shape[1] != 1 else x


def _pack(bits: np.ndarray) -> np.ndarray:
    """(B, 64) bool -> (B,) uint64."""
    return np.packbits(bits.astype(np.uint8), axis=1).view(">u8").ravel().astype(np.uint64)


def phash(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) uint8 -> (B,) uint64 pHash."""
    g = F.interpolate(_grey(x), size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    d = dctn(g[:, 0].numpy().astype(np.float64), type=2, axes=(1, 2), norm="ortho")[:, :8, :8]
    low = d.reshape(len(d), 64)
    return _pack(low > np.median(low, axis=1, keepdims=True))


def dhash(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) uint8 -> (B,) uint64 dHash (is each pixel brighter than its right neighbour)."""
    g = F.interpolate(_grey(x), size=(8, 9), mode="bilinear", antialias=True, align_corners=False)[
        :, 0
    ].numpy()
    return _pack((g[:, :, 1:] > g[:, :, :-1]).reshape(len(g), 64))


def pixel_digest(x: torch.Tensor) -> list[str]:
    """A digest of each image's decoded pixels: equal digests = exact duplicates at the training size."""
    flat = x.reshape(len(x), -1).numpy()
    return [hashlib.blake2b(r.tobytes(), digest_size=12).hexdigest() for r in flat]


def signature(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) uint8 -> (B, 256) float32: the grey image at 16x16, mean-centred and of unit length,
    so that the dot product of two is their pixel correlation (blind to brightness and contrast)."""
    return _unit_16(_grey(x))


def soft_signature(x: torch.Tensor) -> np.ndarray:
    """``signature`` of the image blurred as a copy saved at half its size is: a resized copy has lost
    the fine detail its original still has, so the two correlate only once the original loses it too;
    two distinct images that look alike keep their own detail and do not."""
    g = _grey(x)
    h, w = g.shape[-2:]
    half = F.interpolate(
        g, size=(max(1, h // 2), max(1, w // 2)), mode="bilinear", antialias=True, align_corners=False
    )
    return _unit_16(F.interpolate(half, size=(h, w), mode="bilinear", align_corners=False))


def _unit_16(g: torch.Tensor) -> np.ndarray:
    """(B, 1, H, W) float grey -> (B, 256) float32 at 16x16, mean-centred, of unit length."""
    g = F.interpolate(g, size=(16, 16), mode="bilinear", antialias=True, align_corners=False)
    v = g.flatten(1)
    v = v - v.mean(1, keepdim=True)
    return (v / v.norm(dim=1, keepdim=True).clamp_min(1e-6)).numpy().astype(np.float32)


@dataclass
class Hashes:
    phash: np.ndarray  # (N,) uint64
    dhash: np.ndarray  # (N,) uint64
    digest: list[str]  # (N,) exact pixel digests
    signature: np.ndarray  # (N, 256) float32 (see ``signature``)
    soft: np.ndarray  # (N, 256) float32 (see ``soft_signature``)


def hash_store(store: object, progress: bool = False) -> Hashes:
    """Both hashes and the pixel digest of every image of an ``ImageStore`` (or uint8 tensor)."""
    n = len(store)  # type: ignore[arg-type]
    ph, dh, dg, sg, so = [], [], [], [], []
    for i in range(0, n, BATCH):
        idx = np.arange(i, min(n, i + BATCH))
        x = store.take(idx) if hasattr(store, "take") else store[idx]  # type: ignore[index]
        ph.append(phash(x))
        dh.append(dhash(x))
        dg += pixel_digest(x)
        sg.append(signature(x))
        so.append(soft_signature(x))
    if not ph:
        none = np.zeros((0, 256), np.float32)
        return Hashes(np.zeros(0, np.uint64), np.zeros(0, np.uint64), [], none, none)
    return Hashes(np.concatenate(ph), np.concatenate(dh), dg, np.concatenate(sg), np.concatenate(so))


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(R,) x (N,) uint64 -> (R, N) uint8 bit distances."""
    return np.bitwise_count(a[:, None] ^ b[None, :]).astype(np.uint8)


def correlation(h: Hashes, i: np.ndarray, j: np.ndarray, other: Hashes | None = None) -> np.ndarray:
    """Pixel correlation of the pairs (i[k] in ``h``, j[k] in ``other``, default ``h``): the larger of
    the two as they are, the first blurred against the second, and the second blurred against the first
    (a resized copy may be either one)."""
    o = other or h
    a, b = h.signature[i], o.signature[j]
    sharp = np.einsum("kd,kd->k", a, b)
    return np.maximum(
        sharp,
        np.maximum(np.einsum("kd,kd->k", h.soft[i], b), np.einsum("kd,kd->k", a, o.soft[j])),
    )


def row_blocks(n_rows: int, n_cols: int) -> list[np.ndarray]:
    """Row indices in blocks of at most ``SCAN_PAIRS // n_cols`` rows (at least one)."""
    step = max(1, SCAN_PAIRS // max(1, n_cols))
    return [np.arange(s, min(n_rows, s + step)) for s in range(0, n_rows, step)]


def near_pairs(h: Hashes, phash_bits: int = PHASH_BITS, dhash_bits: int = DHASH_BITS) -> np.ndarray:
    """(P, 2) index pairs i < j whose pHash and dHash both lie within the given bits and whose pixels
    correlate at ``MIN_CORRELATION`` or more (or whose pixels are identical); and, among isolated
    images (see ``LOOSE_BITS``), pairs within ``LOOSE_BITS`` that correlate at
    ``MIN_CORRELATION_ISOLATED``. All pairs, scanned in row blocks: N^2 / 2 comparisons of 64 bits,
    then the isolated images among themselves."""
    n = len(h.phash)
    out = []
    neighbours = np.zeros(n, np.int64)  # other images within LOOSE_BITS on both hashes
    for rows in row_blocks(n, n):
        s = int(rows[0])
        cols = slice(s, n)
        dp, dd = _hamming(h.phash[rows], h.phash[cols]), _hamming(h.dhash[rows], h.dhash[cols])
        r, c = np.nonzero((dp <= LOOSE_BITS) & (dd <= LOOSE_BITS))
        i, j = rows[r], c + s
        later = j > i
        neighbours += np.bincount(i[later], minlength=n) + np.bincount(j[later], minlength=n)
        r, c = np.nonzero((dp <= phash_bits) & (dd <= dhash_bits))
        i, j = rows[r], c + s
        keep = (j > i) & (correlation(h, i, j) >= MIN_CORRELATION)
        out.append(np.stack([i[keep], j[keep]], 1))
    iso = np.flatnonzero(neighbours <= ISOLATED_NEIGHBOURS)
    for rows in row_blocks(len(iso), len(iso)):  # the isolated images among themselves
        s = int(rows[0])
        a, b = iso[rows], iso[s:]
        close = (_hamming(h.phash[a], h.phash[b]) <= LOOSE_BITS) & (
            _hamming(h.dhash[a], h.dhash[b]) <= LOOSE_BITS
        )
        r, c = np.nonzero(close)
        i, j = a[r], b[c]
        keep = (j > i) & (correlation(h, i, j) >= MIN_CORRELATION_ISOLATED)
        out.append(np.stack([i[keep], j[keep]], 1))
    by_digest: dict[str, int] = {}
    for k, d in enumerate(h.digest):
        first = by_digest.setdefault(d, k)
        if first != k:
            out.append(np.array([[first, k]]))
    pairs = np.concatenate(out) if out else np.zeros((0, 2), np.int64)
    return np.unique(pairs, axis=0) if len(pairs) else pairs


def groups_of(pairs: np.ndarray, n: int) -> list[np.ndarray]:
    """Connected components of the pair graph with more than one member, each sorted, largest first."""
    if len(pairs) == 0:
        return []
    g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, comp = connected_components(g, directed=False)
    sizes = np.bincount(comp)
    groups = [np.flatnonzero(comp == c) for c in np.flatnonzero(sizes > 1)]
    return sorted(groups, key=lambda g: (-len(g), int(g[0])))


@dataclass
class DuplicateGroup:
    members: np.ndarray  # indices into the hashed images
    kind: str  # "exact" (same decoded pixels) or "near"
    splits: list[str]  # the distinct splits of its members
    labels: list[int]  # the distinct labels of its members

    @property
    def leak(self) -> bool:
        """Members in train and in val or test: the evaluation has seen a copy in training."""
        return "train" in self.splits and len(self.splits) > 1

    @property
    def conflict(self) -> bool:
        return len(self.labels) > 1


def find_duplicates(
    h: Hashes,
    splits: list[str],
    labels: np.ndarray,
    phash_bits: int = PHASH_BITS,
    dhash_bits: int = DHASH_BITS,
) -> list[DuplicateGroup]:
    """Groups of near-identical images with their splits and labels; leaking and conflicting groups first."""
    out = []
    for g in groups_of(near_pairs(h, phash_bits, dhash_bits), len(h.phash)):
        kind = "exact" if len({h.digest[i] for i in g}) == 1 else "near"
        sp = sorted(
            {splits[i] for i in g},
            key=["train", "val", "test"].index
            if all(splits[i] in ("train", "val", "test") for i in g)
            else str,
        )
        out.append(DuplicateGroup(g, kind, sp, sorted({int(labels[i]) for i in g})))
    return sorted(out, key=lambda d: (not d.leak, not d.conflict, -len(d.members)))


def cross_pairs(
    a: Hashes, b: Hashes, phash_bits: int = PHASH_BITS, dhash_bits: int = DHASH_BITS
) -> list[tuple[int, int]]:
    """(i in a, j in b) pairs that are near-identical: for each image of ``a``, its closest match in
    ``b`` when one is within the bits (or has the same pixels). len(a) x len(b) comparisons."""
    best: dict[int, tuple[float, int]] = {}  # i -> (correlation, j) of its closest confirmed match
    for rows in row_blocks(len(a.phash), len(b.phash)):
        close = (_hamming(a.phash[rows], b.phash) <= phash_bits) & (
            _hamming(a.dhash[rows], b.dhash) <= dhash_bits
        )
        r, j = np.nonzero(close)  # the hashes propose few pairs: correlate only those, not rows x N
        i = rows[r]
        corr = correlation(a, i, j, b)
        for ii, jj, cc in zip(i.tolist(), j.tolist(), corr.tolist(), strict=True):
            if cc >= MIN_CORRELATION and cc > best.get(ii, (-2.0, 0))[0]:
                best[ii] = (cc, jj)
    exact = {d: k for k, d in enumerate(b.digest)}
    out = []
    for n in range(len(a.phash)):
        if (same := exact.get(a.digest[n])) is not None:
            out.append((n, same))
        elif n in best:
            out.append((n, best[n][1]))
    return out


def leakage(
    splits: dict[str, object], names: dict[str, list[str] | None] | None = None
) -> list[tuple[str, str]]:
    """(held-out image, its near copy in train) pairs, by the same hashes and bits as the audit (its
    strict rule: the isolated look needs every pair's neighbours), but only held-out images against
    train (not all pairs): what ``train`` checks before it trains.
    ``splits``: split name -> image store; ``names``: split name -> per-image names (else ``split:i``)."""
    if "train" not in splits or len(splits) < 2:
        return []

    def name(s: str, i: int) -> str:
        lst = (names or {}).get(s)
        return lst[i] if lst is not None else f"{s}:{i}"

    train = hash_store(splits["train"])
    out = []
    for s, store in splits.items():
        if s != "train":
            out += [(name(s, i), name("train", j)) for i, j in cross_pairs(hash_store(store), train)]
    return out


def leakage_warning(pairs: list[tuple[str, str]]) -> str | None:
    """The one line ``train`` logs (and report.html shows) when held-out images have copies in train."""
    if not pairs:
        return None
    a, b = pairs[0]
    return (
        f"warning: leakage: {len(pairs)} validation/test image(s) have a copy in the training split "
        f"(e.g. {a} ~ {b}), so their accuracy reads high; `pixclass data audit` lists every group"
    )
