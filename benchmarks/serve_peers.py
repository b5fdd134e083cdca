"""The peers of ``pixclass serve`` in ``benchmarks/serve.py``, each a server process serving the same
checkpoint's model at POST /predict (multipart field ``files``) with the same JSON answer.

* ``naive``: the FastAPI endpoint people write first -- decode with Pillow, resize, normalise,
  ``model(x)`` in PyTorch eager under ``no_grad``, softmax, one request at a time per call (FastAPI runs
  the sync endpoint in its thread pool).
* ``litserve``: LitServe (``LitAPI``) with its own request batching (``max_batch_size`` 64, 5 ms
  timeout), PyTorch eager on the batch.

    python benchmarks/serve_peers.py naive CKPT PORT
    python benchmarks/serve_peers.py litserve CKPT PORT
"""

from __future__ import annotations

import io
import sys
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import File, UploadFile  # module level: FastAPI resolves the endpoint's annotations here
from PIL import Image

from pixclass import checkpoint as ckpt


class Model:
    """The checkpoint's model, normalisation and temperature, in PyTorch eager."""

    def __init__(self, path: str):
        c = ckpt.load(path)
        self.net = c.build_model().eval()
        card = c.card
        self.classes, self.size, self.channels = list(card.classes), card.input_size, card.channels
        self.mean = torch.tensor(card.preprocess.mean).view(1, -1, 1, 1)
        self.std = torch.tensor(card.preprocess.std).view(1, -1, 1, 1)
        self.t = card.temperature
        self.flip = card.tta == "hflip"  # the checkpoint's test-time flip, so all servers compute the same

    def tensor(self, data: bytes) -> torch.Tensor:
        im = Image.open(io.BytesIO(data)).convert("RGB" if self.channels == 3 else "L")
        im = im.resize((self.size, self.size), Image.Resampling.BICUBIC)
        a = np.asarray(im, np.float32).reshape(self.size, self.size, -1).transpose(2, 0, 1) / 255.0
        return torch.from_numpy(a)

    @torch.no_grad()
    def probs(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        logits = (self.net(x) + self.net(x.flip(-1))) / 2 if self.flip else self.net(x)
        return (logits / self.t).softmax(1)

    def answer(self, name: str, p: torch.Tensor, k: int = 5) -> dict[str, Any]:
        v, i = p.topk(min(k, len(self.classes)))
        top = [
            {"label": self.classes[j], "prob": round(float(q), 6)}
            for q, j in zip(v.tolist(), i.tolist(), strict=True)
        ]
        return {"filename": name, "label": top[0]["label"], "prob": top[0]["prob"], "top_k": top}


def naive(path: str, port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    model = Model(path)
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(files: Annotated[list[UploadFile], File()]) -> dict[str, Any]:
        x = torch.stack([model.tensor(f.file.read()) for f in files])
        p = model.probs(x)
        return {"predictions": [model.answer(f.filename or "", row) for f, row in zip(files, p, strict=True)]}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


try:  # LitServe pickles the API into its worker process: the class must live at module level
    import litserve as ls

    class LitPeer(ls.LitAPI):
        ckpt_path = ""

        def setup(self, device: str) -> None:
            self.model = Model(self.ckpt_path)

        def decode_request(self, request):  # type: ignore[no-untyped-def]  # unannotated: LitServe then hands over the form
            f = request["files"]
            return f.filename, self.model.tensor(f.file.read())

        def batch(self, inputs: list[tuple[str, torch.Tensor]]) -> tuple[list[str], torch.Tensor]:
            return [n for n, _ in inputs], torch.stack([x for _, x in inputs])

        def predict(self, x: tuple[list[str], torch.Tensor]) -> list[dict[str, Any]]:
            names, t = x
            return [self.model.answer(n, row) for n, row in zip(names, self.model.probs(t), strict=True)]

        def unbatch(self, out: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return out

        def encode_response(self, out: dict[str, Any]) -> dict[str, Any]:
            return {"predictions": [out]}
except ImportError:
    ls = None


def litserve(path: str, port: int) -> None:
    if ls is None:
        raise SystemExit("litserve is not installed")
    api = LitPeer(max_batch_size=64, batch_timeout=0.005)
    api.ckpt_path = path  # an instance attribute: pickled with the API
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(port=port, host="127.0.0.1", log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    kind, ck, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    {"naive": naive, "litserve": litserve}[kind](ck, port)
