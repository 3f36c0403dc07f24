"""Classify texts with this exported model. Needs only torch, transformers and safetensors.

python predict.py "a text" "another text" [--top-k 3]
python predict.py --file texts.txt          (one text per line)
"""

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoTokenizer

HERE = Path(__file__).resolve().parent


class TextClassifier(torch.nn.Module):
    """The studio's text model: the encoder, pooled over the real tokens (or its first), a head."""

    def __init__(self, encoder, num_classes, pooling):
        super().__init__()
        self.encoder, self.pooling = encoder, pooling
        self.drop = torch.nn.Dropout(0.1)
        self.head = torch.nn.Linear(encoder.config.hidden_size, num_classes)

    def forward(self, input_ids, attention_mask):
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            pooled = out[:, 0]
        else:
            weights = attention_mask.unsqueeze(-1).to(out.dtype)
            pooled = (out * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.head(self.drop(pooled))


def load():
    labels = json.loads((HERE / "labels.json").read_text())
    pre = json.loads((HERE / "preprocessing.json").read_text())
    config = AutoConfig.from_pretrained(HERE / "encoder")
    try:
        encoder = AutoModel.from_config(config, add_pooling_layer=False)
    except TypeError:  # DistilBERT has no pooler to leave out
        encoder = AutoModel.from_config(config)
    model = TextClassifier(encoder, len(labels), pre["pooling"])
    model.load_state_dict(load_file(str(HERE / "model.safetensors")))
    return model.eval(), AutoTokenizer.from_pretrained(HERE / "encoder"), labels, pre["max_length"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("texts", nargs="*")
    ap.add_argument("--file", help="a UTF-8 file with one text per line")
    ap.add_argument("--top-k", type=int, default=3)
    args = ap.parse_args()
    texts = args.texts + (Path(args.file).read_text(encoding="utf-8").splitlines() if args.file else [])
    model, tokenizer, labels, max_length = load()
    for text in (t for t in texts if t.strip()):
        batch = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            probs = model(batch["input_ids"], batch["attention_mask"]).softmax(-1)[0]
        top = probs.topk(min(args.top_k, len(labels)))
        shown = text if len(text) <= 60 else text[:57] + "..."
        print(
            repr(shown)
            + ": "
            + ", ".join(f"{labels[i]} {p:.1%}" for p, i in zip(top.values.tolist(), top.indices.tolist()))
        )


if __name__ == "__main__":
    main()
