"""Sensitivity maps: the δ of every layer (∂C/∂output, docs/equations.md §1-§4) of a LeNet trained for seconds.

Trains LeNet-5 on a slice of MNIST, then runs deltaprop.explain on one test digit: the per-layer norms of δ
and of ∂C/∂W (what to look at for vanishing or exploding gradients), the input-gradient saliency |∂C/∂x|
drawn in the terminal, and two pictures: every layer's δ maps and the training curves.

    python3 examples/06_sensitivity_maps.py [--limit 3000] [--epochs 1] [--index 0] [--out runs/explain]
"""
import argparse

import numpy as np

import deltaprop as dp
from deltaprop import models, nn, optim
from deltaprop.data import load_mnist, preprocess
from deltaprop.explain import format_norms, layer_gradient_norms, plot_history, plot_sensitivity, sensitivity_maps
from deltaprop.train import fit

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--limit", type=int, default=3000, help="training images (default 3000)")
p.add_argument("--epochs", type=int, default=1)
p.add_argument("--index", type=int, default=0, help="which test digit to explain")
p.add_argument("--data", help="directory with the four MNIST files")
p.add_argument("--out", default="runs/explain", help="directory for the pictures and history.jsonl")
args = p.parse_args()

images, labels = load_mnist(args.data, split="train")
test_images, test_labels = load_mnist(args.data, split="test")
X, y = preprocess(images[:args.limit]), labels[:args.limit].astype(np.int64)
dp.manual_seed(0)
model = models.build("lenet")                       # conv-relu-pool ×2, then 120-84-10
opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
fit(model, nn.CrossEntropyLoss(), opt, (X, y), (preprocess(test_images[:1000]), test_labels[:1000].astype(np.int64)),
    epochs=args.epochs, out_dir=args.out, progress=False)

x = preprocess(test_images[args.index:args.index + 1])   # one digit, (1, 1, 28, 28)
t = test_labels[args.index:args.index + 1].astype(np.int64)
maps = sensitivity_maps(model, x, nn.CrossEntropyLoss(), t)   # eval mode; the model is left as it was
with dp.no_grad():
    pred = int(model.eval()(x).argmax())
model.train()
print(f"\ntest digit {args.index}: label {int(t[0])}, predicted {pred}, loss C = {maps.loss:.4f}")
print("δ of every layer = ∂C/∂(its output); the Conv2d and Linear rows are δ = ∂C/∂z of docs/equations.md:")
print(format_norms(layer_gradient_norms(model, x, nn.CrossEntropyLoss(), t)))

# The input-gradient saliency |∂C/∂x|: which pixels would change the loss most (darkest = most).
sal = np.abs(maps["input"][0, 0])
levels = np.digitize(sal, np.quantile(sal, [0.7, 0.85, 0.95, 0.99]))
digit = test_images[args.index] > 127
print("\nthe digit" + " " * 22 + "|∂C/∂x|: . : * @ = top 30%, 15%, 5%, 1% of the pixels")
for r in range(28):
    print("".join("#" if v else "." for v in digit[r]) + "   " + "".join(" .:*@"[v] for v in levels[r]))

try:
    a = plot_sensitivity(maps, f"{args.out}/sensitivity.png", title=f"digit {args.index}: label {int(t[0])}")
    b = plot_history(f"{args.out}/history.jsonl", f"{args.out}/history.png")
    print(f"\nwrote {a} and {b}")
except ImportError as e:                            # matplotlib is an optional extra
    print(f"\nno pictures: {e}")
