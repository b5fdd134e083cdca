"""Recurrent networks, both ways they classify images.

* ``rnn_rows`` -- an image read as a sequence: each row (W x C values) is one time step of a GRU or
  LSTM; the last state, or a pooling of every row's output, feeds a linear head. Input (N, C, H, W),
  so it uses the image pipeline unchanged.
* ``cnn_rnn`` -- clips (N, T, C, H, W): a registry CNN encodes every frame, a GRU/LSTM runs over the
  frame features in order, and the last state (or attention over the outputs) feeds the head. It can
  tell classes that differ only in the *order* of frames (the direction something moves).
* ``cnn_avg`` -- the baseline: the same per-frame encoder, features averaged over frames. Blind to
  order by construction, so the gap between the two measures what the recurrence adds.

Clip models take ``frames`` (T of the data, recorded for FLOP counts and the checkpoint; any T works)
and find padding from the data: short clips are padded with copies of their last frame, and a trailing
run of identical frames is masked (``data.sequences.clip_lengths``); ``forward(x, lengths)`` overrides
that. For explanations: the encoder sees frames as one (N * T, C, H, W) batch, frame-major, so
``gradcam_layer`` (inside the encoder) gives (N * T, ...) maps; ``temporal_weights`` gives the
attention over frames.

The encoder is built by the registry with ``num_classes = embed``: its own head becomes the projection
of each frame to the ``embed``-wide vector the recurrent net reads, so no weight is left unused.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..data.sequences import clip_lengths
from ..data.sources import DataError
from .registry import create_model, get_entry, register

RNN_TYPES = ("gru", "lstm")
POOLS = ("last", "mean", "max", "meanmax", "attention")
#: Registry family of models whose input is a clip (N, T, C, H, W).
SEQUENCE_FAMILY = "sequence"


class Recurrent(nn.Module):
    """A GRU/LSTM over (N, T, D), batch first. Returns every step's output (N, T, H * dirs) and the final
    state of the top layer, both directions concatenated (N, H * dirs). With ``lengths`` shorter than
    T, the sequence is packed, so the state is read at each sample's own last step."""

    def __init__(
        self,
        input_size: int,
        rnn: str = "gru",
        hidden: int = 128,
        layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        if rnn not in RNN_TYPES:
            raise ValueError(f"rnn={rnn!r}: choose one of {', '.join(RNN_TYPES)}")
        cls = nn.GRU if rnn == "gru" else nn.LSTM
        self.rnn = cls(
            input_size,
            hidden,
            layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.bidirectional = bidirectional
        self.out_dim = hidden * (2 if bidirectional else 1)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        t = x.shape[1]
        if lengths is not None and bool((lengths < t).any()):
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out_p, h = self.rnn(packed)
            out, _ = pad_packed_sequence(out_p, batch_first=True, total_length=t)  # zeros past each length
        else:
            out, h = self.rnn(x)
        h = h[0] if isinstance(h, tuple) else h  # LSTM: (h, c)
        # h: (layers * dirs, N, hidden); the top layer's directions are the last one or two rows
        last = torch.cat([h[-2], h[-1]], 1) if self.bidirectional else h[-1]
        return out, last


class TemporalPool(nn.Module):
    """(N, T, D) outputs -> (N, D') over the valid steps: the last state, mean, max, both, or attention."""

    def __init__(self, dim: int, pool: str = "last"):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool={pool!r}: choose one of {', '.join(POOLS)}")
        self.pool = pool
        self.out_dim = 2 * dim if pool == "meanmax" else dim
        if pool == "attention":
            self.score = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1))

    def weights(self, out: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """(N, T) weights of each step in the pooled vector (attention, or uniform over valid steps)."""
        n, t = out.shape[:2]
        mask = _mask(n, t, lengths, out.device)
        if self.pool == "attention":
            s = self.score(out).squeeze(-1).float().masked_fill(~mask, float("-inf"))
            return s.softmax(1).to(out.dtype)
        return mask.to(out.dtype) / mask.sum(1, keepdim=True).to(out.dtype)

    def forward(
        self, out: torch.Tensor, last: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.pool == "last":
            return last
        if self.pool == "attention" or self.pool == "mean":
            return (self.weights(out, lengths).unsqueeze(-1) * out).sum(1)
        mask = _mask(out.shape[0], out.shape[1], lengths, out.device).unsqueeze(-1)
        mx = out.masked_fill(~mask, float("-inf")).amax(1)
        if self.pool == "max":
            return mx
        mean = (out * mask).sum(1) / mask.sum(1).to(out.dtype)
        return torch.cat([mean, mx], 1)


def _mask(n: int, t: int, lengths: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """(N, T) bool: True on valid steps."""
    if lengths is None:
        return torch.ones(n, t, dtype=torch.bool, device=device)
    return torch.arange(t, device=device)[None] < lengths.to(device)[:, None]


# ------------------------------------------------------------------------------------------ rnn_rows
class RowRNN(nn.Module):
    """An image as a sequence of rows: (N, C, H, W) -> H steps of C * W values -> GRU/LSTM -> pool -> head."""

    gradcam_layer = None  # no spatial feature map; row attributions come from the gradient methods

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 1,
        input_size: int = 28,
        rnn: str = "gru",
        hidden: int = 128,
        layers: int = 2,
        bidirectional: bool = True,
        pool: str = "meanmax",
        dropout: float = 0.1,
    ):
        super().__init__()
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, input_size
        self.rnn = Recurrent(in_chans * input_size, rnn, hidden, layers, bidirectional, dropout)
        self.pool = TemporalPool(self.rnn.out_dim, pool)
        self.num_features = self.pool.out_dim
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        seq = x.permute(0, 2, 1, 3).reshape(n, h, c * w)  # (N, H, C*W): row r is time step r
        out, last = self.rnn(seq)
        return self.pool(out, last)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ------------------------------------------------------------------------------------- clip models
def _encoder(
    encoder: str, embed: int, in_chans: int, input_size: int, kwargs: dict[str, Any] | None
) -> nn.Module:
    fam = get_entry(encoder).family
    if fam in (SEQUENCE_FAMILY, "rnn"):
        raise ValueError(
            f"encoder={encoder!r} is a {fam} model; the frame encoder must be an image CNN (e.g. rescnn, seed_cnn, resnet18)"
        )
    return create_model(encoder, embed, in_chans, input_size, **(kwargs or {}))


class _ClipModel(nn.Module):
    """Shared by cnn_rnn and cnn_avg: the per-frame encoder and the interface."""

    head: nn.Linear
    drop: nn.Module

    def _init_encoder(
        self,
        num_classes: int,
        in_chans: int,
        input_size: int,
        encoder: str,
        encoder_kwargs: dict[str, Any] | None,
        frames: int,
        embed: int,
    ) -> None:
        self.num_classes, self.in_chans, self.input_size, self.frames = (
            num_classes,
            in_chans,
            input_size,
            frames,
        )
        self.encoder = _encoder(encoder, embed, in_chans, input_size, encoder_kwargs)
        layer = getattr(self.encoder, "gradcam_layer", None)
        self.gradcam_layer = f"encoder.{layer}" if layer else None

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, C, H, W) -> (N, T, embed): every frame through the encoder as one batch (frame-major)."""
        n, t = x.shape[:2]
        return self.encoder(x.flatten(0, 1)).view(n, t, -1)

    def _lengths(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"{type(self).__name__} reads clips (N, T, C, H, W), got shape {tuple(x.shape)}")
        return clip_lengths(x) if lengths is None else lengths.to(x.device)

    def forward_features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(f))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, lengths))


class CnnRnn(_ClipModel):
    """Per-frame CNN -> GRU/LSTM over time -> last state or attention -> head."""

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        input_size: int = 32,
        encoder: str = "rescnn",
        encoder_kwargs: dict[str, Any] | None = None,
        frames: int = 8,
        embed: int = 128,
        rnn: str = "gru",
        hidden: int = 128,
        layers: int = 1,
        bidirectional: bool = False,
        pool: str = "last",
        dropout: float = 0.0,
    ):
        super().__init__()
        self._init_encoder(num_classes, in_chans, input_size, encoder, encoder_kwargs, frames, embed)
        self.rnn = Recurrent(embed, rnn, hidden, layers, bidirectional, dropout)
        self.pool = TemporalPool(self.rnn.out_dim, pool)
        self.num_features = self.pool.out_dim
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        lengths = self._lengths(x, lengths)
        out, last = self.rnn(self.frame_features(x), lengths)
        return self.pool(out, last, lengths)

    def temporal_weights(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(N, T): how much each frame's output weighs in the pooled state (attention; uniform for mean;
        all on the last valid frame for 'last', whose state has read every frame before it)."""
        lengths = self._lengths(x, lengths)
        out, _ = self.rnn(self.frame_features(x), lengths)
        if self.pool.pool == "last":
            return torch.nn.functional.one_hot(lengths - 1, x.shape[1]).to(out.dtype)
        return self.pool.weights(out, lengths)


class CnnAvg(_ClipModel):
    """Per-frame CNN -> mean of the frame features over the valid frames -> head. Order-blind."""

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        input_size: int = 32,
        encoder: str = "rescnn",
        encoder_kwargs: dict[str, Any] | None = None,
        frames: int = 8,
        embed: int = 128,
        dropout: float = 0.0,
    ):
        super().__init__()
        self._init_encoder(num_classes, in_chans, input_size, encoder, encoder_kwargs, frames, embed)
        self.num_features = embed
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(embed, num_classes)

    def forward_features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        lengths = self._lengths(x, lengths)
        f = self.frame_features(x)
        w = _mask(f.shape[0], f.shape[1], lengths, f.device).to(f.dtype)
        return (f * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True)

    def temporal_weights(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        lengths = self._lengths(x, lengths)
        w = _mask(x.shape[0], x.shape[1], lengths, x.device).float()
        return w / w.sum(1, keepdim=True)


# -------------------------------------------------------------------------------------- registration
@register(
    "rnn_rows", "rnn", "an image as a sequence of rows: bidirectional GRU (or LSTM), pooled, linear head"
)
def rnn_rows(num_classes: int, in_chans: int, input_size: int, **kw: Any) -> nn.Module:
    return RowRNN(num_classes, in_chans, input_size, **kw)


@register("cnn_rnn", SEQUENCE_FAMILY, "clips: a registry CNN per frame, a GRU/LSTM over frames (order-aware)")
def cnn_rnn(num_classes: int, in_chans: int, input_size: int, **kw: Any) -> nn.Module:
    return CnnRnn(num_classes, in_chans, input_size, **kw)


@register(
    "cnn_avg", SEQUENCE_FAMILY, "clips: a registry CNN per frame, features averaged (order-blind baseline)"
)
def cnn_avg(num_classes: int, in_chans: int, input_size: int, **kw: Any) -> nn.Module:
    return CnnAvg(num_classes, in_chans, input_size, **kw)


def model_for_data(name: str, kwargs: dict[str, Any], frames: int | None) -> tuple[str, dict[str, Any]]:
    """The model to build for data with ``frames`` per clip (None: single images).

    On clips, a clip model gets the data's ``frames``, and an image CNN named by ``--model`` (the default
    rescnn too) becomes the frame encoder of ``cnn_rnn``, its options going to ``encoder_kwargs``. A clip
    model on single images, or an image-only model on clips, is an error that says what to use.
    """
    family = get_entry(name).family
    kw = dict(kwargs)
    if frames:
        if family == SEQUENCE_FAMILY:
            kw["frames"] = frames
            return name, kw
        if family != "rnn":
            return "cnn_rnn", {"encoder": name, "encoder_kwargs": kw, "frames": frames}
        raise DataError(
            f"model {name!r} reads single images; this data holds clips of {frames} frames: "
            "use --model cnn_rnn (order-aware) or cnn_avg, or --kind images to read every frame alone"
        )
    if family == SEQUENCE_FAMILY:
        raise DataError(
            f"model {name!r} reads clips (DATA/<class>/<sample>/<frame files>); this data holds single "
            "images: use rnn_rows or an image CNN, or --kind sequences if the folders are clips"
        )
    return name, kw


__all__ = ["CnnAvg", "CnnRnn", "Recurrent", "RowRNN", "SEQUENCE_FAMILY", "TemporalPool", "model_for_data"]
