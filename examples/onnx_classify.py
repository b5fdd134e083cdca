"""Classify one image with a file from `pixclass export` -- onnxruntime, Pillow and numpy only."""

import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

sess = ort.InferenceSession(sys.argv[1])
meta = sess.get_modelmeta().custom_metadata_map  # classes, input_size, channels, resize rule, ...
classes, size = json.loads(meta["classes"]), int(meta["input_size"])
im = ImageOps.exif_transpose(Image.open(sys.argv[2]))
if im.mode.startswith("I;16"):  # 16-bit grey: the high byte, as pixclass reads it
    im = Image.fromarray((np.asarray(im, np.uint16) >> 8).astype(np.uint8))
elif im.mode == "I":  # 32-bit grey: scaled from 0..65535 (or 0..255 when it fits)
    a = np.asarray(im, np.int64)
    hi = 65535 if a.max(initial=0) > 255 else 255
    im = Image.fromarray((np.clip(a, 0, hi) * 255 // hi).astype(np.uint8))
if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
    bg = Image.new("RGBA", im.size, (*json.loads(meta["background"]), 255))  # alpha on the run's colour
    im = Image.alpha_composite(bg, im.convert("RGBA"))
im = im.convert("RGB" if meta["channels"] == "3" else "L")
s = size / min(im.size)  # the resize rule: shorter side to `size` (bicubic), then the centre crop
w, h = max(size, round(im.width * s)), max(size, round(im.height * s))
im = im.resize((w, h), Image.BICUBIC, reducing_gap=3.0)
left, top = (w - size) // 2, (h - size) // 2
x = np.asarray(im.crop((left, top, left + size, top + size)), np.uint8).reshape(size, size, -1)
outs = sess.run(None, {"x": x.transpose(2, 0, 1)[None]})  # uint8 (1, C, H, W) in, probabilities out
probs = outs[0][0]
if len(outs) > 1:  # in_distribution: the share of validation images less typical than this one
    score, threshold = float(outs[1][0]), float(meta["unknown_threshold"])
    if score < threshold:
        print(f"unknown\tunlike the training images (in_distribution {score:.3f} < {threshold})")
for i in np.argsort(probs)[::-1][:3]:
    print(f"{classes[i]}\t{probs[i]:.4f}")
