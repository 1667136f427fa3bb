"""Train a multilayer perceptron on MNIST with the API: data loaders, a model, a loss, an optimizer, fit().

Loads MNIST (from --data, $DELTAPROP_DATA, ../shared/data beside the checkout or the cache; downloaded once
if none has it), standardises it, holds out 10% for validation, trains the 784-256-128-10 ReLU MLP with
SGD + momentum and a per-batch cosine schedule, then prints the test accuracy and writes history.jsonl.

    python3 examples/03_train_mlp_mnist.py                       # all 60,000 images, 3 epochs
    python3 examples/03_train_mlp_mnist.py --limit 2000 --epochs 1   # seconds
"""
import argparse
import tempfile

import numpy as np

import deltaprop as dp
from deltaprop import models, nn, optim
from deltaprop.data import DataLoader, load_mnist, preprocess, train_val_split
from deltaprop.train import evaluate, fit

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--epochs", type=int, default=3)
p.add_argument("--limit", type=int, help="use only the first N training and N test images")
p.add_argument("--batch-size", type=int, default=64)
p.add_argument("--lr", type=float, default=0.05)
p.add_argument("--data", help="directory with the four MNIST files")
p.add_argument("--out", help="directory for checkpoints and history.jsonl (default: a temporary one)")
args = p.parse_args()

images, labels = load_mnist(args.data, split="train")          # uint8 (60000, 28, 28), uint8 (60000,)
test_images, test_labels = load_mnist(args.data, split="test")
if args.limit:
    images, labels = images[:args.limit], labels[:args.limit]
    test_images, test_labels = test_images[:args.limit], test_labels[:args.limit]
X, y = preprocess(images), labels.astype(np.int64)              # float32 (N, 1, 28, 28), (x/255 − μ)/σ
(X, y), (Xv, yv) = train_val_split(X, y, val_fraction=0.1, seed=0)
print(f"MNIST: {len(X)} training, {len(Xv)} validation, {len(test_images)} test images, {X.dtype}")

dp.manual_seed(0)                                                # the weights' initialisation
model = models.build("mlp")                                      # Flatten, 784-256-128-10, ReLU
model.summary((1, 1, 28, 28))
loss = nn.CrossEntropyLoss()                                     # softmax + cross-entropy, from logits
opt = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
train = DataLoader(X, y, batch_size=args.batch_size, shuffle=True, seed=0)
sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * len(train))

# One step of fit() is: out = model(x); C = loss(out, y); model.backward(loss.backward()); opt.step().
out_dir = args.out or tempfile.mkdtemp(prefix="deltaprop-mlp-")
history = fit(model, loss, opt, train, (Xv, yv), epochs=args.epochs, scheduler=sched, scheduler_interval="step",
              out_dir=out_dir, progress=False)

test_loss, test_acc = evaluate(model, (preprocess(test_images), test_labels.astype(np.int64)))
print(f"final validation accuracy: {history[-1]['val_acc']:.4f}")
print(f"test accuracy: {test_acc:.4f} (loss {test_loss:.4f}) on {len(test_images)} images")
print(f"checkpoints and history.jsonl in {out_dir} (draw the curves: deltaprop.explain.plot_history)")
