"""Prediction speed: imgcls's `Classifier` against fastai's `learn.predict` and `learn.get_preds` on the same model.

    python bench/predict.py [--arch efficientnet_lite2] [--model MODEL.pkl] [--n-single 60] [--repeats 3]

Trains a model on ../shared/data/hymenoptera_data with `imgcls train` in a subprocess (or uses --model, a fastai export
from imgcls), so this process loads it fresh as a deployed app would. Exports it in the safe format and loads that with
`load_classifier`. Then, on the 153 validation photos:

- single-image latency: `learn.predict(file)` vs `clf.predict(file)`, alternating per image, after warm-up;
- folder throughput: `learn.get_preds(dl=learn.dls.test_dl(files))` vs `clf.predict_folder(folder)`, alternating,
  median of `--repeats` runs;
- agreement: the two give the same labels, and their probabilities differ by at most float rounding.

Prints a Markdown table and a JSON line.
"""
import argparse, json, os, platform, statistics, subprocess, sys, tempfile, time, warnings
from pathlib import Path
import numpy as np, torch

ROOT = Path(__file__).resolve().parents[1]


def pct(ts, q): return float(np.percentile(np.array(ts) * 1000, q))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--arch', default=None, help='backbone to train (default: imgcls.models.DEFAULT_ARCH)')
    p.add_argument('--model', type=Path, help='an existing imgcls fastai export (.pkl) instead of training one')
    p.add_argument('--n-single', type=int, default=60, help='images timed one at a time (per library)')
    p.add_argument('--repeats', type=int, default=3, help='folder runs per library')
    a = p.parse_args()
    os.chdir(ROOT)
    from imgcls.core import example_data, image_files
    from imgcls.models import DEFAULT_ARCH
    from imgcls.inference import load_classifier
    from imgcls.modelfile import save_safe
    data = example_data('hymenoptera_data')
    if data is None: sys.exit('needs ../shared/data/hymenoptera_data (or $IMGCLS_DATA)')
    tmp = Path(tempfile.mkdtemp(prefix='bench-predict-'))
    arch = a.arch or DEFAULT_ARCH
    if a.model is None:
        a.model = tmp/'model.pkl'
        t = time.time()
        subprocess.run([sys.executable, '-c', 'from imgcls.cli import main; main()', 'train', str(data), '--arch', arch,
                        '--out', str(a.model)], check=True, stdout=subprocess.DEVNULL)
        print(f'trained {arch} in {time.time() - t:.0f} s', file=sys.stderr)

    from fastai.learner import load_learner
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn = load_learner(a.model)
    clf = load_classifier(save_safe(learn, tmp/'safe'))
    arch = clf.config['arch']
    folder = data/'val'
    files = list(image_files(folder))
    load_start = os.getloadavg()

    # single images, alternating libraries, after warm-up
    singles = files[:a.n_single]
    with learn.no_bar():
        for f in files[:3]: learn.predict(f); clf.predict(f)
        t_fastai, t_ours = [], []
        for i, f in enumerate(singles):
            order = [('fastai', lambda: learn.predict(f)), ('ours', lambda: clf.predict(f))]
            for name, fn in (order if i % 2 == 0 else order[::-1]):
                t = time.perf_counter(); fn(); dt = time.perf_counter() - t
                (t_fastai if name == 'fastai' else t_ours).append(dt)

        # whole folder, alternating, median of repeats
        r_fastai, r_ours = [], []
        for i in range(a.repeats):
            for name in (('fastai', 'ours') if i % 2 == 0 else ('ours', 'fastai')):
                t = time.perf_counter()
                if name == 'fastai': probs, _ = learn.get_preds(dl=learn.dls.test_dl(files))
                else: df = clf.predict_folder(folder)
                (r_fastai if name == 'fastai' else r_ours).append(time.perf_counter() - t)

    # agreement on the whole folder
    ours = torch.tensor(df[[f'prob_{c}' for c in clf.vocab]].to_numpy(dtype=np.float32))
    theirs = probs[:, [list(learn.dls.vocab).index(c) for c in clf.vocab]]
    same_labels = float((ours.argmax(1) == theirs.argmax(1)).float().mean())
    max_diff = float((ours - theirs).abs().max())

    n = len(files)
    res = dict(arch=arch, size=clf.config['size'], n_single=len(singles), n_folder=n,
               fastai_p50_ms=pct(t_fastai, 50), fastai_p95_ms=pct(t_fastai, 95),
               imgcls_p50_ms=pct(t_ours, 50), imgcls_p95_ms=pct(t_ours, 95),
               fastai_img_s=n / statistics.median(r_fastai), imgcls_img_s=n / statistics.median(r_ours),
               same_labels=same_labels, max_prob_diff=max_diff,
               torch_threads=torch.get_num_threads(), cpus=os.cpu_count(),
               load_avg_start=[round(x, 2) for x in load_start], load_avg_end=[round(x, 2) for x in os.getloadavg()],
               python=platform.python_version(), torch=torch.__version__, machine=platform.machine())
    print(f"\n{arch} at {res['size']} px; {len(singles)} single images, {n} in the folder; torch threads: {res['torch_threads']}; "
          f"load average {res['load_avg_start']} -> {res['load_avg_end']}\n")
    print('| | fastai | imgcls | imgcls vs fastai |\n|---|---:|---:|---:|')
    print(f"| single image p50 (ms) | {res['fastai_p50_ms']:.1f} | {res['imgcls_p50_ms']:.1f} | {res['fastai_p50_ms']/res['imgcls_p50_ms']:.1f}x faster |")
    print(f"| single image p95 (ms) | {res['fastai_p95_ms']:.1f} | {res['imgcls_p95_ms']:.1f} | {res['fastai_p95_ms']/res['imgcls_p95_ms']:.1f}x faster |")
    print(f"| folder (images/s) | {res['fastai_img_s']:.1f} | {res['imgcls_img_s']:.1f} | {res['imgcls_img_s']/res['fastai_img_s']:.1f}x |")
    print(f"\nsame label on {same_labels:.1%} of the folder; largest probability difference {max_diff:.1e}")
    print(json.dumps(res))


if __name__ == '__main__': main()
