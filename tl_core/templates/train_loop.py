# ---- the training loop: the same for images and texts -----------------------------------------


def group_of(model):
    """Parameter name -> layer group, from GROUPS."""
    out = {}
    for name, _ in model.named_parameters():
        hits = [g for g, mods in GROUPS.items() if any(name == m or name.startswith(m + ".") for m in mods)]
        if len(hits) != 1:
            raise SystemExit(
                f"{name} is in {len(hits)} groups: GROUPS does not fit this model (another version?)"
            )
        out[name] = hits[0]
    return out


def schedule(opt, total, warmup):
    """Linear warm-up from 10%, then cosine decay to zero, stepped every batch."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    total = max(total, 1)
    warmup = min(warmup, total - 1)
    cosine = CosineAnnealingLR(opt, T_max=max(total - warmup, 1))
    if warmup <= 0:
        return cosine
    return SequentialLR(
        opt, [LinearLR(opt, start_factor=0.1, total_iters=warmup), cosine], milestones=[warmup]
    )


def param_groups(model, groups, lrs):
    """AdamW groups: each trainable layer group at its LR; BN kept trainable (TRAIN_BN) at the head's."""
    params = dict(model.named_parameters())
    out = []
    for g in GROUPS:
        if g not in lrs:
            continue
        live = [p for n, p in params.items() if groups[n] == g and p.requires_grad]
        for ps, wd in (
            ([p for p in live if p.ndim > 1], WEIGHT_DECAY),
            ([p for p in live if p.ndim <= 1], 0.0),
        ):
            if ps:
                out.append({"params": ps, "lr": lrs[g], "weight_decay": wd})
    seen = {id(p) for pg in out for p in pg["params"]}
    extra = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    if extra:
        out.append({"params": extra, "lr": lrs.get("head", max(lrs.values())), "weight_decay": 0.0})
    return out


class Best:
    """The best epoch so far and its weights; also counts epochs without a new best."""

    def __init__(self):
        self.key, self.epoch, self.acc, self.weights, self.bad = None, 0, 0.0, None, 0

    def update(self, model, epoch, val_loss, val_acc):
        key = (val_loss if not math.isnan(val_loss) else math.inf, -val_acc)
        if self.key is None or key < self.key:
            self.key, self.epoch, self.acc, self.bad = key, epoch, val_acc, 0
            self.weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            self.bad += 1

    def patience_ran_out(self):
        return PATIENCE and self.bad >= PATIENCE


def autocast(device):
    """Mixed precision on a GPU, as the studio trains: bfloat16 where supported, else float16."""
    if device != "cuda":
        return torch.autocast("cpu", enabled=False)
    return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


@torch.no_grad()
def evaluate(model, loader, device, amp=True):
    """Mean loss and accuracy; ``amp=False`` for the head on float32 features, as the studio does."""
    model.eval()
    loss = correct = seen = 0
    for x, y in loader:
        x, y = to_device(x, device), y.to(device)
        with autocast(device) if amp else torch.autocast(device, enabled=False):
            logits = model(x).float()
        loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    return loss / max(seen, 1), correct / max(seen, 1)


def train_full(model, data, criterion, device, best):
    """Every phase: freeze, build the optimizer, train, keep the best epoch."""
    groups = group_of(model)
    train_dl = data_loader(model, data, "train", training=True)
    val_dl = data_loader(model, data, "val", training=False)
    bn_types = nn.modules.batchnorm._BatchNorm
    bn_params = {
        f"{m}.{p}"
        for m, mod in model.named_modules()
        if isinstance(mod, bn_types)
        for p, _ in mod.named_parameters(recurse=False)
    }
    fp16 = device == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler(enabled=fp16)  # float16 gradients need scaling; bfloat16 don't
    epoch = 0
    for phase in PHASES:
        live = set(phase["lr"])
        for name, p in model.named_parameters():
            p.requires_grad_(groups[name] in live or (TRAIN_BN and name in bn_params))
        opt = torch.optim.AdamW(param_groups(model, groups, phase["lr"]))
        steps = phase["epochs"] * len(train_dl)
        sched = schedule(opt, steps, min(len(train_dl), steps // 5))
        frozen_bn = (
            []
            if TRAIN_BN
            else [
                mod
                for m, mod in model.named_modules()
                if isinstance(mod, bn_types)
                and (own := [f"{m}.{p}" for p, _ in mod.named_parameters(recurse=False)])
                and all(groups[n] not in live for n in own)
            ]
        )  # frozen layers keep their running statistics
        best.bad = 0
        for _ in range(phase["epochs"]):
            if best.patience_ran_out():
                break  # early stopping: on to the next phase
            epoch += 1
            model.train()
            for m in frozen_bn:
                m.eval()
            for x, y in train_dl:
                x, y = to_device(x, device), y.to(device)
                with autocast(device):
                    loss = criterion(model(x).float(), y)
                if not torch.isfinite(loss):
                    raise SystemExit(f"the loss became {loss.item()}: lower the learning rates in PHASES")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
            val_loss, val_acc = evaluate(model, val_dl, device)
            print(f"epoch {epoch} [{phase['name']}] val loss {val_loss:.4f} acc {val_acc:.4f}")
            best.update(model, epoch, val_loss, val_acc)


@torch.no_grad()
def features(model, loader, device):
    """Pooled pre-logit features: what the classifier sees."""
    model.eval()
    xs, ys = [], []
    for x, y in loader:
        with autocast(device):
            xs.append(
                model.forward_head(model.forward_features(to_device(x, device)), pre_logits=True).float()
            )
        ys.append(y.to(device))
    return torch.cat(xs), torch.cat(ys)


def train_head_on_features(model, data, criterion, device, best):
    """Frozen backbone, no augmentation: compute features once, then train only the head on them."""
    tx, ty = features(model, data_loader(model, data, "train", training=False), device)
    vx, vy = features(model, data_loader(model, data, "val", training=False), device)
    head = model.get_submodule(CLASSIFIER)
    groups = group_of(model)
    train_ds = TensorDataset(tx, ty)
    train_dl = batches(train_ds, shuffle=True)
    val_dl = batches(TensorDataset(vx, vy), shuffle=False)
    epoch = 0
    for phase in PHASES:
        for name, p in model.named_parameters():
            p.requires_grad_(groups[name] in phase["lr"])
        opt = torch.optim.AdamW(param_groups(model, groups, phase["lr"]))
        steps = phase["epochs"] * len(train_dl)
        sched = schedule(opt, steps, min(len(train_dl), steps // 5))
        best.bad = 0
        for _ in range(phase["epochs"]):
            if best.patience_ran_out():
                break
            epoch += 1
            head.train()
            for x, y in train_dl:
                loss = criterion(head(x), y)
                if not torch.isfinite(loss):
                    raise SystemExit(f"the loss became {loss.item()}: lower the learning rate in PHASES")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            val_loss, val_acc = evaluate(head, val_dl, device, amp=False)
            print(f"epoch {epoch} [{phase['name']}] val loss {val_loss:.4f} acc {val_acc:.4f}")
            best.update(model, epoch, val_loss, val_acc)


def batches(dataset, shuffle, **kwargs):
    """The order comes from the sampler's own generator: the same with any number of workers."""
    sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(SEED)) if shuffle else None
    gen = torch.Generator().manual_seed(SEED)  # seeds the data workers
    return torch.utils.data.DataLoader(dataset, BATCH_SIZE, sampler=sampler, generator=gen, **kwargs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help=DATA_HELP)
    ap.add_argument("--weights", help=WEIGHTS_HELP)
    ap.add_argument("--out", default="model.safetensors")
    args = ap.parse_args()
    random.seed(SEED)
    np.random.seed(SEED % 2**32)
    torch.manual_seed(SEED)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = read_data(args.data)  # checked before any model loads
    model = build_model(args.weights).to(device)
    weight = torch.tensor(CLASS_WEIGHTS, device=device) if CLASS_WEIGHTS else None
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=LABEL_SMOOTHING)
    best = Best()
    (train_head_on_features if FEATURE_CACHE else train_full)(model, data, criterion, device, best)
    model.load_state_dict(best.weights)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in best.weights.items()}, args.out)
    print(f"kept epoch {best.epoch}: val accuracy {best.acc:.4f}; weights saved to {args.out}")
    if SPLIT.get("test"):  # once, with the kept weights: it chose nothing
        _, test_acc = evaluate(model, data_loader(model, data, "test", training=False), device)
        print(f"test accuracy {test_acc:.4f} on {len(SPLIT['test'])} held-out {NOUN}")
