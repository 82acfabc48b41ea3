"""Writes PyTorch-format copies of two fixture checkpoints, so that the .bin import path is
tested on the same weights and expected outputs as the safetensors one.

Usage (any PyTorch >= 2.0 with safetensors): python3 make_pytorch_bins.py
The outputs are inputs to tests, not expected values: the expected outputs stay those of
clip_hf/ and clip_openclip/.
"""
import os

import torch
from safetensors.torch import load_file

here = os.path.dirname(os.path.abspath(__file__))
os.makedirs(os.path.join(here, "pytorch"), exist_ok=True)
# transformers' pytorch_model.bin: a plain state dict (zip format, torch >= 1.6)
torch.save(load_file(os.path.join(here, "clip_hf", "model.safetensors")),
           os.path.join(here, "pytorch", "pytorch_model.bin"))
# An open_clip training checkpoint: weights under "state_dict" with DDP's "module." prefix.
sd = load_file(os.path.join(here, "clip_openclip", "open_clip_model.safetensors"))
torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in sd.items()}},
           os.path.join(here, "pytorch", "open_clip_checkpoint.pt"))
print("written")
