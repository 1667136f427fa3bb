"""YOLOv3-tiny from the shipped Darknet cfg: the layer table, a forward pass on a photo, boxes, layer outputs.

There are no trained weights here, so the network gets seeded random weights (Darknet's initialisation,
batch-norm statistics mean 0 / variance 1): the boxes it prints are MEANINGLESS, the pipeline is not.
With real weights: darknet.load("yolov3-tiny", "yolov3-tiny.weights") and the same code finds objects.
The photo (letterboxed as Darknet does) is a coco128 one shipped in tests/fixtures unless --image is given.

    python3 examples/05_darknet_yolov3_tiny.py [--image photo.jpg] [--size 416] [--thresh 0.5]
"""
import argparse
from pathlib import Path

import numpy as np

import deltaprop as dp
from deltaprop import darknet
from deltaprop.detect import letterbox_image, load_image, network_detections, nms_sort, report

COCO = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "coco128"   # three photos, labels
p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--image", help="a photo (default: the first shipped coco128 photo)")
p.add_argument("--size", type=int, default=416, help="network width = height, a multiple of 32 (default 416)")
p.add_argument("--thresh", type=float, default=0.5)
p.add_argument("--seed", type=int, default=0)
args = p.parse_args()
image_path = Path(args.image) if args.image else sorted((COCO / "images").glob("*.jpg"))[0]
names = (COCO / "coco.names").read_text().split("\n")[:80] if (COCO / "coco.names").is_file() else None

dp.manual_seed(args.seed)                                   # Darknet's random initialisation, repeatable
net = darknet.load("yolov3-tiny", width=args.size, height=args.size)
for layer in net.layers:                                    # untrained BN statistics: mean 0, variance 1
    if getattr(layer, "bn", None) is not None:
        layer.set_darknet_array("rolling_variance", np.ones(layer.filters, dtype=np.float32))
net.summary()                                               # Darknet's layer table

image = load_image(image_path)                              # float32 (3, H, W) in [0, 1]
_, ih, iw = image.shape
x = letterbox_image(image, args.size, args.size)[None]      # aspect kept, 0.5-grey borders
outs = net.predict(x)                                       # eval mode, no caches: the two [yolo] outputs
print(f"\n{image_path.name}: {iw}x{ih} letterboxed to {args.size}x{args.size}; "
      f"[yolo] outputs {[o.shape for o in outs]}")
dets = nms_sort(network_detections(net, outs, iw, ih, args.thresh), 0.45)   # decode (§9), undo letterbox, NMS
boxes = report(dets, iw, ih, args.thresh, names)
print(f"{len(boxes)} boxes above {args.thresh} (RANDOM WEIGHTS: meaningless), the first 5:")
for b in boxes[:5]:
    print("   ", b)
label = COCO / "labels" / (image_path.stem + ".txt")
if label.is_file() and names:
    print("what the photo holds (coco128 labels):",
          ", ".join(sorted({names[int(line.split()[0])] for line in label.read_text().splitlines() if line})))

lo = net.layer_outputs                                      # node i = cfg layer i (Darknet's numbering)
print(f"\n{'layer':>5} {'kind':<14} {'output':<18} {'mean':>9} {'std':>9}")
for i, (layer, a) in enumerate(zip(net.layers, lo)):
    print(f"{i:>5} {layer.kind:<14} {str(a.shape[1:]):<18} {a.mean():>9.4f} {a.std():>9.4f}")
yolo, conv = lo[16].reshape(3, 85, -1), lo[15].reshape(3, 85, -1)
sig = np.concatenate([np.r_[0:2], np.r_[4:85]])
checks = {
    "route 17 is layer 13's output": lo[17] is lo[13],
    "route 20 = concat(layer 19, layer 8)": np.array_equal(lo[20], np.concatenate([lo[19], lo[8]], axis=1)),
    "upsample 19 = layer 18, each pixel 2x2": np.array_equal(lo[19], lo[18].repeat(2, axis=2).repeat(2, axis=3)),
    "yolo 16 = logistic(conv 15) on x, y, obj, classes": np.allclose(yolo[:, sig], 1 / (1 + np.exp(-conv[:, sig])),
                                                                     atol=1e-6),
    "yolo 16 = conv 15 on w, h (linear)": np.array_equal(yolo[:, 2:4], conv[:, 2:4]),
}
for what, ok in checks.items():
    print(f"{'ok  ' if ok else 'FAIL'} {what}")
