#!/usr/bin/env python3
"""Loads a tabcnn model of any network into PyTorch and prints its test accuracy, to compare
with what `tabcnn eval --model` prints: reads the network's text from the file's metadata
(`tabcnn.net`; a file without it is the tutorial's LeNet), takes the program that
`tabcnn net TEXT --pytorch` prints (it defines `net` and checks its state_dict against the
file's names and shapes), loads the file with load_state_dict, and scores DIR/test_batch.bin
in eval mode (running statistics, no dropout) with tabcnn's normalisation (x/255 - 0.5) / 0.5.
Needs: pip install torch numpy safetensors.

  python3 scripts/pytorch_net_eval.py MODEL.safetensors DIR [PATH/TO/tabcnn]
"""
import json, struct, subprocess, sys
import numpy as np
import torch
from safetensors.torch import load_file

model, data = sys.argv[1], sys.argv[2]
tabcnn = sys.argv[3] if len(sys.argv) > 3 else "target/release/tabcnn"
with open(model, "rb") as f:
    header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
text = header.get("__metadata__", {}).get("tabcnn.net", "lenet")
program = subprocess.run([tabcnn, "net", text, "--pytorch"], check=True, capture_output=True, text=True).stdout
scope = {}
exec(program, scope)
net = scope["net"]
net.load_state_dict(load_file(model))
net.eval()
raw = np.fromfile(f"{data}/test_batch.bin", dtype=np.uint8).reshape(-1, 3073)
y = torch.from_numpy(raw[:, 0].astype(np.int64))
x = (torch.from_numpy(raw[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32)) / 255.0 - 0.5) / 0.5
with torch.no_grad():
    pred = torch.cat([net(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
print(f"PyTorch '{text}' with {model}: test accuracy {100.0 * (pred == y).float().mean().item():.2f} % on {len(y)} images")
