"""Issue 15 benchmark: finding flipped labels, imgcls's out-of-fold confident learning against fastai's loss ranking.

Seeded label flips on COPIES of the data sets (a temporary folder of symbolic links; ../shared is never touched):
a share of all images (train and validation) moves to another class folder of the same split. Run from the repository root:

    python bench/label_issues.py --no-fastai          # imgcls only (seconds on a warm feature cache)
    python bench/label_issues.py                      # with fastai's way, once per set and noise level (minutes)
"""
from __future__ import annotations
import argparse, datetime, os, shutil, sys, tempfile, time, warnings
from pathlib import Path
import numpy as np, torch
from fastai.vision.all import set_seed
from imgcls.core import example_data, image_files
from imgcls.data import image_dataloaders
from imgcls.learner import image_learner, epoch_table
from imgcls.labels import find_label_issues, _link_copy

warnings.filterwarnings('ignore', category=FutureWarning)

def noisy_copy(src: Path, dest: Path, frac: float, seed: int) -> set:
    "Link `src` into `dest`, then move a seeded `frac` of all images to a random other class of their split; the moved paths."
    _link_copy(src, dest)
    files = image_files(dest)
    classes = sorted({f.parent.name for f in files})
    rng = np.random.default_rng(seed)
    flipped = set()
    for i in rng.choice(len(files), round(frac * len(files)), replace=False):
        f = files[i]
        new = rng.choice([c for c in classes if c != f.parent.name])
        target = f.parent.parent/new/f.name
        os.replace(f, target); flipped.add(str(target))
    return flipped

def scores(ranked: list, flagged: set, flipped: set) -> dict:
    "Precision and recall of the flag set, precision at k = number flipped."
    k = len(flipped)
    return dict(n=k, n_flagged=len(flagged), precision=len(flagged & flipped) / max(len(flagged), 1),
                recall=len(flagged & flipped) / k, p_at_k=len(set(ranked[:k]) & flipped) / k)

def run_imgcls(data: Path, flipped: set) -> dict:
    "`find_label_issues` with its defaults: flag set and ranking (flagged first, by self-confidence)."
    t0 = time.perf_counter()
    df = find_label_issues(data)
    return scores(df.path.tolist(), set(df.path[df.flagged]), flipped) | dict(seconds=time.perf_counter() - t0)

def run_fastai(data: Path, flipped: set, size: int|None, seed: int) -> dict:
    "fastai's way: `fine_tune(1)`, then every image ranked by its loss, as `ImageClassifierCleaner` does (train and validation)."
    t0 = time.perf_counter()
    set_seed(seed)
    dls = image_dataloaders(data, size=size, check=False, seed=42)
    learn = image_learner(dls, seed=seed)
    with epoch_table(learn): learn.fine_tune(1)
    paths, losses, wrong = [], [], []
    for dl in (dls.train.new(shuffle=False, drop_last=False), dls.valid):  # the cleaner's `dls[ds_idx]`, in order
        # what `ImageClassifierCleaner` (and `ClassificationInterpretation.top_losses`) rank by: the loss of each image
        with learn.no_bar(): probs, targs, loss = learn.get_preds(dl=dl, with_loss=True)
        paths += [str(p) for p in dl.items]; losses.append(loss)
        wrong.append(probs.argmax(1) != targs)
    losses, wrong = torch.cat(losses), torch.cat(wrong)
    order = losses.argsort(descending=True).tolist()
    # the cleaner has no flag set; the natural one is "the trained network predicts another class"
    return scores([paths[i] for i in order], {paths[i] for i in range(len(paths)) if wrong[i]}, flipped) | dict(seconds=time.perf_counter() - t0)

def fmt(r: dict) -> str:
    return f"{r['n']} | {r['n_flagged']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['p_at_k']:.3f} | {r['seconds']:.1f}"

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--datasets', default='hymenoptera_data,flowers')
    p.add_argument('--fracs', type=float, nargs='+', default=[0.1, 0.2])
    p.add_argument('--trials', type=int, default=3, help='flip seeds for imgcls (fastai runs on the first only)')
    p.add_argument('--no-fastai', action='store_true')
    p.add_argument('--fastai-size', default='hymenoptera_data:260,flowers:128', help='image size per data set for fine_tune')
    p.add_argument('--out', type=Path, default=Path('bench/label_issues.md'))
    args = p.parse_args()
    sizes = dict((n, int(s)) for n, s in (x.split(':') for x in args.fastai_size.split(',')))
    rows, t_start, load0 = [], time.perf_counter(), os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix='imgcls-labels-'))
    try:
        for name in args.datasets.split(','):
            src = example_data(name)
            if src is None: sys.exit(f'data set {name!r} not found')
            for frac in args.fracs:
                for trial in range(args.trials):
                    data = work/f'{name}-{frac}-{trial}'
                    flipped = noisy_copy(src, data, frac, seed=trial)
                    r = run_imgcls(data, flipped)
                    rows.append((name, frac, trial, 'imgcls (out-of-fold confident learning)', r)); print(rows[-1], flush=True)
                    if trial == 0 and not args.no_fastai:
                        r = run_fastai(data, flipped, sizes.get(name), seed=trial)
                        rows.append((name, frac, trial, f"fastai fine_tune(1) at {sizes.get(name)} px, loss ranking", r)); print(rows[-1], flush=True)
                    shutil.rmtree(data)
    finally: shutil.rmtree(work, ignore_errors=True)
    lines = [f"# Finding flipped labels: imgcls vs fastai's loss ranking", '',
             f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; command: `{' '.join(['python', *sys.argv])}`; "
             f"{os.cpu_count()} CPUs (shared), total {time.perf_counter() - t_start:.0f} s; load average at start / end: {load0:.1f} / {os.getloadavg()[0]:.1f} "
             "(seconds are wall time on this busy machine)", '',
             '| data set | flipped | trial | method | k = flipped | flagged | flag precision | flag recall | precision at k | s |',
             '|---|---:|---:|---|---:|---:|---:|---:|---:|---:|']
    lines += [f"| {n} | {int(f * 100)}% | {t} | {m} | {fmt(r)} |" for n, f, t, m, r in rows]
    lines += ['', '## Means over trials (imgcls)', '', '| data set | flipped | flag precision | flag recall | precision at k | s |', '|---|---:|---:|---:|---:|---:|']
    for name in args.datasets.split(','):
        for frac in args.fracs:
            rs = [r for n, f, _, m, r in rows if n == name and f == frac and m.startswith('imgcls')]
            lines.append(f"| {name} | {int(frac * 100)}% | " + ' | '.join(f"{np.mean([r[k] for r in rs]):.3f}" for k in ('precision', 'recall', 'p_at_k'))
                         + f" | {np.mean([r['seconds'] for r in rs]):.1f} |")
    text = '\n'.join(lines) + '\n'
    if args.out: args.out.write_text(text)
    print(text)

if __name__ == '__main__': main()
