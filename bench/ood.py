""""None of these": the k-th-nearest-neighbour domain check against the top softmax probability, on real photos.

    python bench/ood.py [--arch efficientnet_lite2] [--out bench/ood.md]

For each model data set in ../shared/data (hymenoptera_data, flowers), trained like imgcls's fast path (the head alone,
`fit_head`, 20 epochs on cached features, seed 42; no `fit_top`), and each unrelated set (the other data set, all its
images; scikit-image's sample photos, `imgcls.ood.unrelated_photos`):

- AUROC and FPR@95 (share of unrelated images accepted when 95% of validation images are) of the kNN score
  (`imgcls.ood.fit_domain`, defaults) and of the top probability of the trained head (max softmax);
- the share of unrelated images called a class at the chosen threshold of each score;
- the share of the model's own validation images called "none of these", held out: the threshold is calibrated on one
  half of the validation images and counted on the other half (both ways, averaged);
- the hard case: flowers with one class left out (a linear probe, sklearn LogisticRegression, gives the top probability there);
- the saved model's growth (safetensors bytes) and the check's cost per image against one whole prediction.

All features come from the shared cache (`compute_features`). Prints the tables and writes them to --out.
"""
import argparse, contextlib, io, os, platform, sys, tempfile, time
from pathlib import Path
import numpy as np, torch

ROOT = Path(__file__).resolve().parents[1]


def setup(path, arch):
    "The DataLoaders and Learner `train()` would make (seed 42), with its head fitted on cached features."
    from imgcls.data import image_dataloaders
    from imgcls.learner import image_learner, fit_head
    from fastai.vision.all import set_seed
    set_seed(42)
    dls = image_dataloaders(path, arch, bs=32, seed=42, check=False)
    learn = image_learner(dls, arch, seed=42)
    with learn.no_bar(), contextlib.redirect_stdout(io.StringIO()): fit_head(learn, 20, 3e-3, seed=42)  # no epoch table
    return learn


def feats(learn, items):
    from imgcls.learner import compute_features
    return compute_features(learn, list(items))[0]


def msp(learn, X):
    "Top softmax probability of the trained head on features `X`."
    with torch.inference_mode(): return learn.model.head.eval()(X).softmax(1).max(1).values.numpy()


def held_out_none(Xt, Xv, yt, keep, reps=10, folds=5):
    "Share of validation images called none of these when the threshold comes from the other folds (5-fold, 10 repeats)."
    from imgcls.ood import fit_domain
    return _cross(len(Xv), reps, folds, lambda c, o: (~fit_domain(Xt, Xv[c], keep=keep, labels=yt).in_domain(Xv[o])).mean())


def held_out_none_msp(pv, keep, reps=10, folds=5):
    "The same for the top probability, with the same (conformal) threshold rule on its negation."
    from imgcls.ood import _threshold
    return _cross(len(pv), reps, folds, lambda c, o: (-pv[o] > _threshold(-pv[c], keep)).mean())


def _cross(n, reps, folds, rate):
    out = []
    for r in range(reps):
        parts = np.array_split(np.random.default_rng(r).permutation(n), folds)
        out += [rate(np.concatenate(parts[:i] + parts[i+1:]), parts[i]) for i in range(folds)]
    return float(np.mean(out))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--arch', default=None)
    p.add_argument('--out', type=Path, default=ROOT/'bench'/'ood.md')
    p.add_argument('--keep', type=float, default=None, help="fit_domain's keep (default: its default)")
    p.add_argument('--n-latency', type=int, default=40, help='single images timed for the latency cost')
    a = p.parse_args()
    os.chdir(ROOT)
    from imgcls.core import example_data, image_files
    from imgcls.models import DEFAULT_ARCH
    from imgcls.learner import _labels
    from imgcls.ood import fit_domain, auroc, fpr_at, unrelated_photos, _threshold
    import inspect
    keep = a.keep or inspect.signature(fit_domain).parameters['keep'].default
    from sklearn.linear_model import LogisticRegression
    from safetensors.torch import save_file
    arch = a.arch or DEFAULT_ARCH
    names = ['hymenoptera_data', 'flowers']
    paths = {n: example_data(n) for n in names}
    if not all(paths.values()): sys.exit(f'needs ../shared/data/{{{",".join(names)}}} (or $IMGCLS_DATA)')
    t0, load0 = time.time(), os.getloadavg()[0]
    rows, sizes, lat, hard = [], [], [], []
    models = {n: setup(paths[n], arch) for n in names}
    for n in names:
        learn = models[n]
        dls = learn.dls
        Xt, Xv, yt = feats(learn, dls.train.items), feats(learn, dls.valid.items), _labels(dls.train_ds)
        dc = fit_domain(Xt, Xv, keep=keep, labels=yt)
        sv, pv = dc.score(Xv), msp(learn, Xv)
        none_knn, none_msp = held_out_none(Xt, Xv, yt, keep), held_out_none_msp(pv, keep)
        msp_th = -_threshold(-pv, keep)
        others = {o: image_files(paths[o]) for o in names if o != n}
        others['scikit-image photos'] = unrelated_photos()
        for o, items in others.items():
            Xo = feats(learn, items)
            so, po = dc.score(Xo), msp(learn, Xo)
            rows.append(dict(model=n, unrelated=o, n=len(items), knn_auroc=auroc(sv, so), knn_fpr=fpr_at(sv, so),
                             knn_called=float(dc.in_domain(Xo).mean()), knn_none=none_knn,
                             msp_auroc=auroc(-pv, -po), msp_fpr=fpr_at(-pv, -po), msp_called=float((po >= msp_th).mean()), msp_none=none_msp))
        # size: the model's safetensors with and without the check's tensors
        tensors, config = dc.state()
        with tempfile.TemporaryDirectory() as d:
            sd = {k: v.contiguous() for k, v in learn.model.state_dict().items()}
            save_file(sd, f'{d}/m.safetensors'); save_file({**sd, **tensors}, f'{d}/m2.safetensors')
            sizes.append((n, len(Xt), len(dc.refs), os.path.getsize(f'{d}/m.safetensors'), os.path.getsize(f'{d}/m2.safetensors')))
        # latency: a whole single-image prediction (decode, preprocess, body, head) vs the check on its pooled features
        from imgcls.inference import Classifier
        clf = Classifier(learn.model, learn.model.config)
        files = list(dls.valid.items)[:a.n_latency]
        body, head = learn.model.body.eval(), learn.model.head.eval()
        def whole(f):
            x = clf.tensor(f)[None].contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(): fe = body(x); head(fe).softmax(1)
            return fe
        for f in files[:3]: dc.score(whole(f))
        tp, ts = [], []
        for f in files:
            t = time.perf_counter(); fe = whole(f); tp.append(time.perf_counter() - t)
            t = time.perf_counter(); dc.in_domain(fe); ts.append(time.perf_counter() - t)
        lat.append((n, len(dc.refs), 1000*np.median(tp), 1000*np.median(ts)))
    # the hard case: one flower class left out of training; its validation images are the unrelated ones
    learn = models['flowers']; dls = learn.dls
    Xt, Xv = feats(learn, dls.train.items), feats(learn, dls.valid.items)
    yt, yv = _labels(dls.train_ds).numpy(), _labels(dls.valid_ds).numpy()
    for c, cname in enumerate(dls.vocab):
        it, iv = yt != c, yv != c
        dc = fit_domain(Xt[it], Xv[iv], keep=keep, labels=yt[it])
        lr = LogisticRegression(C=1.0, max_iter=2000).fit(Xt[it].numpy(), yt[it])
        pi, po = lr.predict_proba(Xv[iv].numpy()).max(1), lr.predict_proba(Xv[~iv].numpy()).max(1)
        si, so = dc.score(Xv[iv]), dc.score(Xv[~iv])
        hard.append((cname, int((~iv).sum()), auroc(si, so), fpr_at(si, so), float(dc.in_domain(Xv[~iv]).mean()), auroc(-pi, -po), fpr_at(-pi, -po)))
    md = report(rows, sizes, lat, hard, arch, keep, time.time() - t0, load0, os.getloadavg()[0])
    print(md); a.out.write_text(md)


def report(rows, sizes, lat, hard, arch, keep, secs, load0, load1):
    import imgcls, torch
    pc = lambda v: f'{100*v:.1f}%'
    L = ['# "None of these" benchmark', '',
         f'`python bench/ood.py` ({time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, {secs:.0f} s; load average {load0:.1f} → {load1:.1f} on {os.cpu_count()} cores; '
         f'Python {platform.python_version()}, torch {torch.__version__}, imgcls {imgcls.__version__}). Backbone: `{arch}`; '
         'features from the shared cache. Method: see the docstring of `bench/ood.py`.', '',
         f'- **kNN**: `imgcls.ood.fit_domain(keep={keep})`: cosine distance to the 5th nearest L2-normalised training feature (at most 2048 kept); '
         f'threshold: halfway between the validation score of rank ceil((n+1)*{keep}) and the next (split conformal; no validation image on the boundary).',
         '- **top probability**: the max softmax of the head trained as imgcls\'s fast path does (`fit_head`, 20 epochs); '
         'threshold by the same rule on its validation values (negated).',
         '- **FPR@95**: the share of unrelated images accepted at the threshold that keeps 95% of the validation images (the usual measure, Sun et al.).',
         '- **called a class**: unrelated images the chosen threshold accepts. **own valid. called none**: validation images the threshold '
         'rejects when calibrated on the other validation images (5-fold, 10 repeats: held out).', '',
         '| model | unrelated images | n | kNN AUROC | kNN FPR@95 | kNN: unrelated called a class | kNN: own valid. called none | top-prob. AUROC | top-prob. FPR@95 | top-prob.: unrelated called a class | top-prob.: own valid. called none |',
         '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        L.append(f"| {r['model']} | {r['unrelated']} | {r['n']} | **{r['knn_auroc']:.3f}** | {r['knn_fpr']:.3f} | {pc(r['knn_called'])} | {pc(r['knn_none'])} | "
                 f"{r['msp_auroc']:.3f} | {r['msp_fpr']:.3f} | {pc(r['msp_called'])} | {pc(r['msp_none'])} |")
    ok = all(r['knn_auroc'] >= 0.98 and r['knn_called'] <= 0.05 and r['knn_none'] <= 0.06 for r in rows)
    L += ['', f'Targets (AUROC ≥ 0.98, ≤ 5% unrelated called a class, ≤ 6% own validation called none, every pair): **{"met" if ok else "NOT met"}** by kNN.', '',
          '## Model size', '', '| model | training images | reference features kept (float16) | safetensors without | with the check | growth |', '|---|---:|---:|---:|---:|---:|']
    for n, nt, nr, s0, s1 in sizes: L.append(f'| {n} | {nt} | {nr} | {s0/1e6:.2f} MB | {s1/1e6:.2f} MB | +{100*(s1-s0)/s0:.0f}% |')
    L += ['', 'At most `max_refs` (2048) features are kept, drawn per class in proportion, so the growth is bounded (2048 × 1280 × 2 bytes = 5.2 MB for Lite2) however many images the model was trained on.',
          '', '## Latency', '', '| model | references | one whole prediction p50 (decode, preprocess, body, head) | the check p50 | cost |', '|---|---:|---:|---:|---:|']
    for n, nr, tp, ts in lat: L.append(f'| {n} | {nr} | {tp:.1f} ms | {ts:.2f} ms | +{100*ts/tp:.1f}% |')
    L += ['', '## The hard case: a new kind of flower', '', 'Flowers with one class left out of the references and the threshold; that class\'s validation images are the "unrelated" ones. '
          'Top probability here from a linear probe (sklearn `LogisticRegression`, C=1) on the same features.', '',
          '| left out | n | kNN AUROC | kNN FPR@95 | kNN: called a class | top-prob. AUROC | top-prob. FPR@95 |', '|---|---:|---:|---:|---:|---:|---:|']
    for c, n, a1, f1, called, a2, f2 in hard: L.append(f'| {c} | {n} | {a1:.3f} | {f1:.3f} | {pc(called)} | {a2:.3f} | {f2:.3f} |')
    L += ['', f'Mean kNN AUROC {np.mean([h[2] for h in hard]):.3f}, top probability {np.mean([h[5] for h in hard]):.3f}: '
          'a new species of a known kind mostly looks like the training images, to both scores. The check catches photos of other things, not new classes of the same thing.', '']
    return '\n'.join(L)


if __name__ == '__main__': main()
