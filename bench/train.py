"""Issue 6 benchmark: imgcls's default training against the fastbook chapter-2 recipe in plain fastai.

Both use the same backbone (EfficientNet-Lite2) with the same ImageNet weights and score the same validation
images. Run from the repository root:

    python bench/train.py                      # full run, writes bench/results.md (quiet machine, long)
    python bench/train.py --quick --out /tmp/r.md   # smoke test on small subsets, 1 epoch
    python bench/train.py --seeds 1 2 3 --no-fastai # repeated splits: mean and spread over seeds (bench/train_seeds.md)
    python bench/train.py --seeds 1 2 3 --datasets flowers --subsample 20 100 --no-fastai --out /tmp/s.md  # a bear-sized set
"""
from __future__ import annotations
import argparse, datetime, math, os, platform, shutil, subprocess, sys, tempfile, time, warnings
from contextlib import contextmanager
from pathlib import Path
import numpy as np, torch, timm, fastai
from fastai.vision.all import (Callback, DataBlock, ImageBlock, CategoryBlock, GrandparentSplitter, RandomSplitter,
                               RandomResizedCrop, Normalize, aug_transforms, parent_label, vision_learner, accuracy, set_seed)
import imgcls, imgcls.learner, imgcls.runtime, imgcls.training
from imgcls.core import example_data, image_files
from imgcls.data import dataset_items, split_folders, image_dataloaders
from imgcls.learner import epoch_table, image_learner
from imgcls.models import DEFAULT_ARCH, create_backbone, pretrained_model, offline_state_dict

warnings.filterwarnings('ignore', category=FutureWarning)

def lite2(pretrained: bool = True):
    "fastai `arch` function: imgcls's ImageNet EfficientNet-Lite2 (a timm model, classifier included)."
    return pretrained_model(DEFAULT_ARCH, pretrained)[0]

class EpochTimer(Callback):
    "Wall seconds of every epoch (training plus validation), for extrapolating longer runs."
    def before_fit(self): self.times = getattr(self, 'times', [])
    def before_epoch(self): self.t0 = time.perf_counter()
    def after_epoch(self): self.times.append(time.perf_counter() - self.t0)

def fastai_recipe(path: Path, epochs: int, mean, std, bs: int = 64, valid_pct: float = 0.2, seed: int = 42) -> dict:
    "fastbook ch. 2: RandomResizedCrop(224, 0.5) + aug_transforms, `vision_learner(dls, lite2)`, `fine_tune(epochs)`."
    t0 = time.perf_counter()
    set_seed(seed)
    splits = split_folders(path)
    dblock = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=dataset_items, get_y=parent_label,
                       splitter=GrandparentSplitter(*splits) if splits else RandomSplitter(valid_pct, seed=seed),
                       item_tfms=RandomResizedCrop(224, min_scale=0.5),
                       batch_tfms=[*aug_transforms(), Normalize.from_stats(mean, std)])
    dls = dblock.dataloaders(path, bs=bs)
    timer = EpochTimer()
    learn = vision_learner(dls, lite2, metrics=accuracy, cbs=timer)
    with epoch_table(learn):
        learn.fine_tune(epochs)
        learn.remove_cb(timer)  # `validate` fires epoch events too
        with learn.no_bar(): acc = float(learn.validate()[1])
    return dict(seconds=time.perf_counter() - t0, acc=acc, epochs=epochs, epoch_seconds=timer.times,
                n_train=len(dls.train_ds), n_valid=len(dls.valid_ds), valid_items=set(map(str, dls.valid.items)))

@contextmanager
def timed_feature_passes():
    "Record `(n_images, n_computed, seconds)` of every `compute_features` call that imgcls's `train` makes."
    import imgcls.crossval, imgcls.labels
    calls, orig = [], imgcls.learner.compute_features
    mods = (imgcls.learner, imgcls.crossval, imgcls.labels, imgcls.training)   # each imported it by name
    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        X, n = orig(*args, **kwargs)
        calls.append((len(X), n, time.perf_counter() - t0))
        return X, n
    for m in mods: m.compute_features = timed
    try: yield calls
    finally:
        for m in mods: m.compute_features = orig

def imgcls_default(path: Path, work: Path, **kwargs) -> dict:
    "`imgcls.training.train(path, out=..., **kwargs)` (default settings unless given): wall seconds, accuracy, time in feature passes."
    with timed_feature_passes() as calls:
        t0 = time.perf_counter()
        res = imgcls.training.train(path, out=work/'model.safetensors', verbose=False, **kwargs)
        seconds = time.perf_counter() - t0
    computed = [(n, s) for _, n, s in calls if n]
    return dict(seconds=seconds, acc=res['valid_accuracy'], n_train=res['n_train'], n_valid=res['n_valid'], top_epochs=res['top_epochs'],
                computed=sum(n for n, _ in computed), feature_seconds=sum(s for _, s in computed))

def imgcls_valid_items(path: Path) -> set:
    "The validation images of imgcls's default split (seeded 20%, or the valid/val folder)."
    return set(map(str, image_dataloaders(path, check=False, num_workers=0).valid.items))

def forward_throughput(n_batches: int = 10, bs: int = 32) -> dict:
    "Images/s of the backbone body alone (eval, inference_mode, random input at its size), NCHW and channels_last."
    bb = create_backbone(DEFAULT_ARCH)
    body, out = bb.body.eval(), dict(size=bb.size)
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(bs, 3, bb.size, bb.size).contiguous(memory_format=fmt)
        with torch.inference_mode():
            body(x)  # warm-up: oneDNN picks its kernels on the first call
            t0 = time.perf_counter()
            for _ in range(n_batches): body(x)
        out[str(fmt).split('.')[-1]] = bs * n_batches / (time.perf_counter() - t0)
    out['limit'] = max(out['contiguous_format'], out['channels_last'])
    return out

# ---- runtime columns (issue 14): the ONNX Runtime forward beside torch's, and the feature pass against both

def runtime_throughput(n_batches: int = 10, bs: int = 32) -> dict:
    "Images/s of the same body on ONNX Runtime (`imgcls.runtime`), exported once to the cache; empty when it cannot run there."
    from imgcls.runtime import frozen_forward
    bb = create_backbone(DEFAULT_ARCH)
    t0 = time.perf_counter()
    fwd = frozen_forward(bb.body, bb.size, f'{DEFAULT_ARCH}-body', runtime='auto')
    if fwd is bb.body: return {}
    export_s, x = time.perf_counter() - t0, torch.randn(bs, 3, bb.size, bb.size).numpy()
    fwd.session(x)  # warm-up
    t0 = time.perf_counter()
    for _ in range(n_batches): fwd.session(x)
    return dict(onnxruntime=bs * n_batches / (time.perf_counter() - t0), onnx_export_s=export_s)

def runtime_lines(r: dict, tp: dict) -> list:
    "Markdown lines: the cold feature pass against the torch channels-last and ONNX Runtime raw forwards (issue 14: >= 2.5x channels-last)."
    cold = r['cold']
    rate = cold['computed'] / cold['feature_seconds'] if cold['feature_seconds'] else float('nan')
    ort = tp.get('onnxruntime')
    return [f"- feature pass {rate:.1f} images/s = **{rate / tp['channels_last']:.2f}x the torch channels-last forward** "
            f"({tp['channels_last']:.1f} images/s)" + (f"; {100 * rate / ort:.0f}% of the ONNX Runtime forward ({ort:.1f} images/s)" if ort else
            "; ONNX Runtime not available"), '']

def check_cut() -> str:
    "Check that fastai's `create_body` (what `vision_learner` uses) cuts lite2 right before its pooling."
    from fastai.vision.learner import create_body
    m = lite2().eval()
    body = create_body(lite2(), cut=None).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode(): diff = float((body(x) - m.forward_features(x)).abs().max())
    kept = [n for n, _ in m.named_children()][:len(body)]
    assert diff < 1e-5 and kept[-1] == 'bn2', (kept, diff)
    return f"keeps {', '.join(kept)} (drops global_pool, classifier); its output matches timm's forward_features (max abs diff {diff:g})"

def subset(src: Path, dest: Path, n_train: int = 40, n_valid: int = 12) -> Path:
    "Copy the first images of each class (per split folder) into `dest`, keeping the layout; for `--quick`."
    splits = split_folders(src)
    folders = [(src/s, n) for s, n in zip(splits, (n_train, n_valid))] if splits else [(src, None)]
    for folder, n in folders:
        classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith('.'))
        n = n or math.ceil(100 / len(classes))  # no split: ~100 images, so >= 64 (one batch) train after the 20% split
        for c in classes:
            (dest/c.relative_to(src)).mkdir(parents=True, exist_ok=True)
            for f in image_files(c)[:n]: shutil.copy2(f, dest/f.relative_to(src))
    return dest

def machine() -> list:
    "Markdown lines describing this machine and the software."
    lscpu = dict(l.split(':', 1) for l in subprocess.run(['lscpu'], capture_output=True, text=True).stdout.splitlines() if ':' in l)
    mem = next((l.split(':')[1].strip() for l in open('/proc/meminfo') if l.startswith('MemTotal')), '?')
    keys = ['Model name', 'CPU(s)', 'Thread(s) per core', 'L2 cache', 'L3 cache', 'Hypervisor vendor']
    return [f"- CPU (`lscpu`): {'; '.join(f'{k}: {lscpu[k].strip()}' for k in keys if k in lscpu)}",
            f"- `nproc`: {len(os.sched_getaffinity(0))}; torch threads: {torch.get_num_threads()}; memory: {mem}",
            f"- python {platform.python_version()}, torch {torch.__version__}, fastai {fastai.__version__}, timm {timm.__version__}, "
            f"imgcls {imgcls.__version__}; {platform.platform()}"]

def dataset_table(name: str, r: dict, tp: dict, fastai_note: str) -> list:
    "Markdown section with one dataset's results."
    fa, cold, warm = r['fastai'], r['cold'], r['warm']
    ep = ', '.join(f'{s:.0f}' for s in fa['epoch_seconds'])
    rate = cold['computed'] / cold['feature_seconds'] if cold['feature_seconds'] else float('nan')
    return [f"### {name}  ({cold['n_train']} train / {cold['n_valid']} validation images; same validation images for both: "
            f"{'yes' if r['same_valid'] else 'NO'})", '',
            '| method | wall s | validation accuracy | notes |', '|---|---:|---:|---|',
            f"| fastai ch. 2 recipe, `fine_tune({fa['epochs']})` | {fa['seconds']:.1f} | {fa['acc']:.4f} | epochs (s): {ep}{fastai_note} |",
            f"| imgcls `train`, cold feature cache | {cold['seconds']:.1f} | {cold['acc']:.4f} | feature pass: {cold['computed']} images "
            f"in {cold['feature_seconds']:.1f} s |",
            f"| imgcls `train`, warm feature cache | {warm['seconds']:.1f} | {warm['acc']:.4f} | {warm['computed']} images recomputed |",
            *([f"| imgcls `train(top_epochs=0)`, head only, cold feature cache | {r['head_cold']['seconds']:.1f} | {r['head_cold']['acc']:.4f} | "
               f"feature pass: {r['head_cold']['computed']} images in {r['head_cold']['feature_seconds']:.1f} s |"] if 'head_cold' in r else []), '',
            f"- wall ratio imgcls (cold) / fastai: **{cold['seconds'] / fa['seconds']:.3f}** (fastai is {fa['seconds'] / cold['seconds']:.1f}x slower); "
            f"warm: {warm['seconds'] / fa['seconds']:.3f}",
            f"- accuracy difference imgcls - fastai: **{100 * (cold['acc'] - fa['acc']):+.1f} points**",
            f"- imgcls feature pass: {rate:.1f} images/s = {100 * rate / tp['limit']:.0f}% of the raw forward limit "
            f"({tp['limit']:.1f} images/s); it includes hashing, decoding, resizing and writing the cache", '']

def fastai_note(fa: dict, epochs: int) -> str:
    "When the recipe ran fewer epochs than `--epochs`: say so, with `fine_tune(epochs)`'s time projected from its epochs."
    if fa['epochs'] >= epochs or len(fa['epoch_seconds']) < 2: return ''
    unfrozen = fa['epoch_seconds'][1:]
    return (f"; **reduced from fine_tune({epochs})** with `--fastai-epochs-flowers`: fine_tune({epochs}) would take "
            f"~{fa['seconds'] + (epochs - fa['epochs']) * sum(unfrozen) / len(unfrozen):.0f} s (its measured epochs, extrapolated)")

def write_results(out: Path, args, results: dict, tp: dict, convert_s: float, cut: str, load: tuple):
    "Write the Markdown report to `out` (and print it)."
    fa_notes = {n: fastai_note(r['fastai'], args.epochs) for n, r in results.items()}
    lines = [f"# Training benchmark: imgcls vs plain fastai{' (QUICK smoke test on small subsets: not a measurement)' if args.quick else ''}", '',
             f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}. Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`", '',
             '## Machine', *machine(), f"- load average at start / end: {load[0]:.2f} / {load[1]:.2f}", '',
             '## Method',
             f"- Backbone for both: `{DEFAULT_ARCH}` (timm `tf_efficientnet_lite2`), ImageNet weights converted from the PyPI package "
             f"by `imgcls.models.offline_state_dict` into a fresh `$IMGCLS_CACHE` at the start: one-time cost {convert_s:.1f} s, "
             "not counted in either method (like fastai's one-time hub download).",
             "- fastai: `vision_learner(dls, lite2, metrics=accuracy)` where `lite2(pretrained=True)` returns "
             "`imgcls.models.pretrained_model('efficientnet_lite2')[0]`: a plain-fastai call with fastai's own cut, head "
             f"(`create_head`: concat pool, BN, dropout, 512 hidden) and splitter. fastai's cut {cut}. DataBlock: "
             "`RandomResizedCrop(224, min_scale=0.5)`, `aug_transforms()`, `Normalize` with the backbone's mean/std (0.5), bs 64, "
             "fastai's default DataLoader workers; `get_items=imgcls.data.dataset_items` (sorted files, so that "
             "`RandomSplitter(0.2, seed=42)` draws imgcls's split); `learn.fine_tune(N)` = 1 frozen + N unfrozen epochs; "
             "accuracy from `learn.validate()`. It trains at 224 px, the fastbook size; imgcls uses the backbone's 260 px.",
             "- imgcls: `imgcls.training.train(path, out=...)`, all defaults (5-fold CV of the probe on the training features; 20 head epochs on cached features; the label check; when the probe cross-validates under 90%, 8 epochs fine-tuning the top of the backbone on cached feature maps of 4 of the 5 folds, kept when it beats the probe on the fifth; the domain check; export included), "
             "first with the feature cache empty (cold), then again (warm).",
             "- All timings in this one process (imports excluded), order: forward throughput, then per dataset imgcls cold, imgcls warm, "
             "fastai. Image files are read once beforehand so both start with the OS page cache warm.",
             f"- Raw forward limit: body only, batch 32, eval, `inference_mode`, random {tp['size']} px input: "
             f"{tp['contiguous_format']:.1f} images/s NCHW, {tp['channels_last']:.1f} images/s channels_last"
             + (f", {tp['onnxruntime']:.1f} images/s ONNX Runtime ({imgcls.runtime.n_threads()} threads; export {tp['onnx_export_s']:.1f} s, "
                "once per weights, into the fresh cache)." if 'onnxruntime' in tp else '.'), '',
             '## Results', '']
    for name, r in results.items(): lines += dataset_table(name, r, tp, fa_notes[name]) + runtime_lines(r, tp)
    text = '\n'.join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)

# ---- repeated-split mode (issue 17): `--seeds 1 2 3` ----

def link_pooled(src: Path, dest: Path, lo: int|None = None, hi: int|None = None, seed: int = 0) -> Path:
    "Link `src`'s images into `dest/<class>/` (train and valid folders pooled, so every seed draws its own split); with `lo`/`hi`, a seeded random 20-100-style number per class."
    rng = np.random.default_rng(seed)
    by_class = {}
    for f in image_files(src): by_class.setdefault(f.parent.name, []).append(f)
    for c, fs in sorted(by_class.items()):
        if lo: fs = [fs[i] for i in sorted(rng.choice(len(fs), min(len(fs), int(rng.integers(lo, hi + 1))), replace=False))]
        (dest/c).mkdir(parents=True, exist_ok=True)
        for f in fs: (dest/c/f'{f.parent.parent.name}_{f.name}').symlink_to(f.resolve())
    return dest

def imgcls_seed(path: Path, seed: int) -> dict:
    "imgcls's default `train` on one split seed (its `cv_accuracy` ± `cv_std` estimate the saved recipe), plus the probe's own CV and its scores on validation."
    from imgcls.crossval import cross_validate_learner, fit_probe, set_head
    from imgcls.learner import _labels, compute_features
    t0 = time.perf_counter()
    res = imgcls.training.train(path, seed=seed, out=None, verbose=False)
    seconds = time.perf_counter() - t0
    dls = image_dataloaders(path, seed=seed, check=False, num_workers=0)
    learn = image_learner(dls, seed=seed)
    t0 = time.perf_counter()
    cv = cross_validate_learner(learn, seed=seed)   # warm cache: `train` just computed these features; timed again here
    cv_s = time.perf_counter() - t0
    Xv, _ = compute_features(learn, dls.valid.items); yv = _labels(dls.valid_ds).numpy()
    probe = fit_probe(cv['X'], _labels(dls.train_ds).numpy(), cv['C'], dls.c)
    set_head(learn.model, probe, cv['X'])
    with torch.inference_mode(): folded = float((learn.model.head.eval()(Xv).argmax(1).numpy() == yv).mean())
    return dict(seconds=seconds, acc=res['valid_accuracy'], head=res['head_accuracy'], top=res['top_epochs'], kept=res['top_kept'],
                holdout=res['holdout'], n_train=res['n_train'], n_valid=res['n_valid'], cv=res['cv_accuracy'], cv_std=res['cv_std'],
                probe_cv=cv['cv_accuracy'], C=cv['C'], cv_seconds=cv_s, label_issues=res['label_issues'], steps=res['step_seconds'],
                probe=float((probe.probs(Xv).argmax(1) == yv).mean()), folded=folded)

def seeds_main(args):
    "Mean and spread over split seeds, imgcls (with its cross-validated estimate) against the fastai recipe."
    work = Path(tempfile.mkdtemp(prefix='imgcls-seeds-'))
    sets = [(n, example_data(n)) for n in args.datasets.split(',') if n] + [(Path(f).name, Path(f)) for f in args.folders]
    lines = [f"# Repeated splits: imgcls vs fastai over seeds {args.seeds}", '',
             f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}. Command: `{' '.join(['python', *sys.argv])}`", '', *machine(), '',
             'Each data set is pooled into class folders (symbolic links), so each seed draws its own 20% validation split. '
             "`cv ± cv_std` = train's `cv_accuracy` ± `cv_std`: the 5-fold cross-validated accuracy of the L2-normalised logistic-regression probe on the training images, "
             "or, when the fine-tuned top is kept, the accuracy on the held-out fold of the training images of the top fine-tuned on the other four "
             "(the saved top is then fine-tuned again on every training image); ± is `accuracy_spread`: one standard deviation of what a validation set of this size "
             "reads around the estimate by chance (the binomial error of the images the estimate was measured on, and of the validation images). "
             '`top` = epochs of `fit_top` (run when the probe cross-validates under 90%), `kept` = whether it beat the probe on the held-out fold (head / top accuracy there). '
             '`probe cv` = the probe\'s own CV; `probe` / `folded` = that probe, and the probe copied into the model head (`set_head`), on validation. '
             '`cv s` = the cross-validation alone, on a warm cache; `choice s` = the fine-tuning on four folds that decides whether to keep the top (bottom maps included), '
             '`refit s` = the fine-tuning again on every training image (`step_seconds` of `train`). `within 2 std` = |valid - cv| <= 2 cv_std.', '']
    within = lambda r: abs(r['acc'] - r['cv']) <= 2 * r['cv_std']
    n_within = [0, 0]
    try:
        for name, src in sets:
            if src is None: sys.exit(f'data set {name!r} not found')
            sub = f' (classes subsampled to {args.subsample[0]}-{args.subsample[1]} images, seed 0)' if args.subsample else ''
            path = link_pooled(src, work/name, *(args.subsample or (None, None)))
            rows = []
            for seed in args.seeds:
                print(f'== {name} seed {seed}', flush=True)
                r = imgcls_seed(path, seed)
                if not args.no_fastai:
                    bb = create_backbone(DEFAULT_ARCH, pretrained=False)
                    fa = fastai_recipe(path, args.epochs or 4, bb.mean, bb.std, seed=seed)
                    r |= dict(fastai=fa['acc'], fastai_s=fa['seconds'])
                rows.append((seed, r)); print(r, flush=True)
            lines += [f"## {name}{sub}: {rows[0][1]['n_train']} train / {rows[0][1]['n_valid']} validation", '',
                      '| seed | imgcls valid | head alone | top | kept (held-out head / top) | s | cv ± cv_std | within 2 std | probe cv | C | cv s | choice s | refit s | mislabeled | probe valid | folded head valid | fastai valid | fastai s |',
                      '|---:|---:|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
            for seed, r in rows:
                ho = f" ({r['holdout']['head']:.4f} / {r['holdout']['top']:.4f})" if r['holdout'] else ''
                lines.append(f"| {seed} | {r['acc']:.4f} | {r['head']:.4f} | {r['top']} | {'yes' if r['kept'] else 'no'}{ho} | {r['seconds']:.0f} | "
                             f"{r['cv']:.4f} ± {r['cv_std']:.4f} | {'yes' if within(r) else 'NO'} | {r['probe_cv']:.4f} | {r['C']:g} | {r['cv_seconds']:.1f} | "
                             f"{r['steps'].get('top_choice', 0):.0f} | {r['steps'].get('top', 0):.0f} | "
                             f"{r['label_issues']} | {r['probe']:.4f} | {r['folded']:.4f} | {r.get('fastai', float('nan')):.4f} | {r.get('fastai_s', float('nan')):.0f} |")
                n_within[0] += within(r); n_within[1] += 1
            ms = lambda k: f"{np.mean([r[k] for _, r in rows]):.4f} ± {np.std([r[k] for _, r in rows], ddof=1) if len(rows) > 1 else 0:.4f}"
            lines += ['', f"mean ± std over seeds: imgcls {ms('acc')}, head alone {ms('head')}, cv {ms('cv')}, probe {ms('probe')}, folded head {ms('folded')}"
                      + ('' if args.no_fastai else f", fastai {ms('fastai')}")
                      + f"; default minus head alone, worst seed: {min(r['acc'] - r['head'] for _, r in rows):+.4f}"
                      + f"; cross-validation's share of the wall time, largest: {max(r['cv_seconds'] / r['seconds'] for _, r in rows):.1%}"
                      + f"; the held-out choice's share, largest: {max(r['steps'].get('top_choice', 0) / r['seconds'] for _, r in rows):.1%}", '']
    finally: shutil.rmtree(work, ignore_errors=True)
    lines += [f"valid within 2 cv_std of cv_accuracy: {n_within[0]} of {n_within[1]} (data set, seed) runs", '']
    text = '\n'.join(lines) + '\n'
    args.out.write_text(text); print(text)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--datasets', default='hymenoptera_data,flowers', help='comma-separated names under shared/data (or $IMGCLS_DATA)')
    p.add_argument('--quick', action='store_true', help='smoke test: small subsets, fine_tune(1), few throughput batches')
    p.add_argument('--epochs', type=int, default=None, help='fine_tune epochs of the fastai recipe (default 4; 1 with --quick)')
    p.add_argument('--fastai-epochs-flowers', type=int, default=None, help='fine_tune epochs on flowers, if fewer than --epochs are affordable')
    p.add_argument('--out', type=Path, default=Path('bench/results.md'), help='Markdown report to write')
    p.add_argument('--seeds', type=int, nargs='+', help='repeated-split mode: mean and spread over these split seeds (writes --out, default bench/train_seeds.md)')
    p.add_argument('--folders', nargs='*', default=[], help='repeated-split mode: more data set folders')
    p.add_argument('--subsample', type=int, nargs=2, metavar=('LO', 'HI'), help='repeated-split mode: keep a random LO-HI images per class (like the bear set)')
    p.add_argument('--no-fastai', action='store_true', help='repeated-split mode: skip the (slow) fastai recipe')
    args = p.parse_args()
    if args.seeds:
        if args.out == Path('bench/results.md'): args.out = Path('bench/train_seeds.md')
        return seeds_main(args)
    args.epochs = args.epochs or (1 if args.quick else 4)
    load0 = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix='imgcls-bench-'))
    os.environ['IMGCLS_CACHE'] = str(work/'cache')  # fresh cache: conversion and features computed from scratch
    try:
        t0 = time.perf_counter(); offline_state_dict(DEFAULT_ARCH); convert_s = time.perf_counter() - t0
        cut = check_cut()
        bb = create_backbone(DEFAULT_ARCH, pretrained=False)
        tp = forward_throughput(n_batches=2 if args.quick else 10)
        tp.update(runtime_throughput(n_batches=2 if args.quick else 10))
        tp['limit'] = max(tp['limit'], tp.get('onnxruntime', 0))
        print(f'forward limit: {tp}', flush=True)
        results = {}
        for name in args.datasets.split(','):
            path = example_data(name)
            if path is None: sys.exit(f'data set {name!r} not found: put it in ../shared/data or set $IMGCLS_DATA')
            if args.quick: path = subset(path, work/'data'/name)
            for f in image_files(path): f.read_bytes()  # warm the OS page cache for both methods alike
            shutil.rmtree(work/'cache'/'features', ignore_errors=True)
            print(f'== {name}: imgcls (cold, then warm)', flush=True)
            r = dict(cold=imgcls_default(path, work), warm=imgcls_default(path, work))
            if r['cold']['top_epochs']:  # the default also fine-tuned the top: time the head alone from a cold cache too
                shutil.rmtree(work/'cache'/'features', ignore_errors=True)
                r['head_cold'] = imgcls_default(path, work, top_epochs=0)
            epochs = args.fastai_epochs_flowers if name == 'flowers' and args.fastai_epochs_flowers else args.epochs
            print(f'== {name}: fastai fine_tune({epochs})', flush=True)
            r['fastai'] = fastai_recipe(path, epochs, bb.mean, bb.std)
            r['same_valid'] = r['fastai'].pop('valid_items') == imgcls_valid_items(path)
            results[name] = r
        write_results(args.out, args, results, tp, convert_s, cut, (load0, os.getloadavg()[0]))
    finally: shutil.rmtree(work, ignore_errors=True)

if __name__ == '__main__': main()
