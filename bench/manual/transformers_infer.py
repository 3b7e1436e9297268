# What users run by hand today: does a transformers model run in this image (and where)?
import os

os.environ["HF_HUB_OFFLINE"] = "1"
import torch
from transformers import BertConfig, BertModel

torch.manual_seed(0)
model = BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=128, vocab_size=1000)).eval()
device = "cuda" if torch.cuda.is_available() else "cpu"
with torch.no_grad():
    out = model.to(device)(torch.randint(0, 1000, (2, 16), device=device)).last_hidden_state
print("transformers:", tuple(out.shape), "on", out.device)
