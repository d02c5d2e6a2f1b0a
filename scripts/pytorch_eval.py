#!/usr/bin/env python3
"""Loads a tabcnn model (safetensors, PyTorch state_dict names) into the tutorial's Net with
load_state_dict and prints its test accuracy on DIR/test_batch.bin, to compare with what
`tabcnn eval --model` prints. (The reverse: safetensors.torch.save_file(net.state_dict(), path)
writes a file that `tabcnn eval --model` and `tabcnn train --load` read.)
Needs: pip install torch numpy safetensors.

  python3 scripts/pytorch_eval.py MODEL.safetensors DIR
"""
import os, sys
import numpy as np
import torch
from safetensors.torch import load_file
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference"))
from seed_lenet import Net, load  # the reference recipe's own model and loader

model, data = sys.argv[1], sys.argv[2]
net = Net()
net.load_state_dict(load_file(model))
x, y = load(os.path.join(data, "test_batch.bin"))
with torch.no_grad():
    pred = torch.cat([net(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
print(f"PyTorch Net with {model}: test accuracy {100.0 * (pred == y).float().mean().item():.2f} % on {len(y)} images")
