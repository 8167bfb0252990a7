"""Writes a small GPT-2 with transformers' save_pretrained (safetensors) and checks that
chesslens loads it and gives transformers' logits, on the CPU and on the GPU backend.

usage: hf_logits_check.py BUILD_DIR   (run by tests/gpu/device-check.sh on a GPU machine)
"""
import os
import shutil
import subprocess
import sys
import tempfile

import torch
import transformers

build = sys.argv[1]
source = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
tmp = tempfile.mkdtemp(prefix="chesslens-hf-")
torch.manual_seed(3)
config = transformers.GPT2Config(n_layer=3, n_embd=96, n_head=4, n_positions=128, n_ctx=128,
                                 vocab_size=77)
hf = transformers.GPT2LMHeadModel(config).eval()
hf.save_pretrained(tmp, safe_serialization=True)
# chesslens reads the chess vocabulary from tokenizer.json, as every chess GPT-2 carries it
shutil.copy(os.path.join(source, "models/chess-tiny/tokenizer.json"), tmp)
tokens = [int(x) for x in torch.randint(0, 77, (40,))]
with torch.inference_mode():
    want = hf(torch.tensor([tokens])).logits[0].double()
worst = 0.0
for backend in ("cpu", "cuda"):
    out = subprocess.run([os.path.join(build, "tests/gpu/hf_logits"), tmp, backend] +
                         [str(t) for t in tokens], check=True, capture_output=True, text=True)
    got = torch.tensor([[float(v) for v in line.split()] for line in out.stdout.splitlines()],
                       dtype=torch.float64)
    rel = float((got - want).norm() / want.norm())
    print(f"{backend}: logits of {len(tokens)} tokens, relative L2 error {rel:.3g} "
          f"(max abs {float((got - want).abs().max()):.3g})")
    worst = max(worst, rel)
shutil.rmtree(tmp)
if not worst <= 1e-5:
    sys.exit(f"hf_logits_check: relative error {worst:.3g} over 1e-5")
print("hf_logits_check: chesslens matches transformers on both backends")
