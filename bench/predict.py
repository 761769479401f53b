"""Prediction speed: imgcls's `Classifier` against fastai's `learn.predict` and `learn.get_preds` on the same model,
then torch against ONNX Runtime (issue 14).

    python bench/predict.py [--only fastai|runtimes] [--arch efficientnet_lite2] [--model MODEL.pkl] [--n-single 60] [--repeats 3]
                            [--datasets hymenoptera_data,flowers] [--models DIR]

Runtimes (`--only runtimes` runs just this part): per data set, trains the default model in the safe format with
`imgcls train --out DIR` (or reuses DIR/<data set>/model.json under --models; `save_safe` writes its model.onnx), adds a
domain check when the model has none (fitted on its training/validation features, saved as DIR-checked) and saves the
same network without one (DIR-plain). On every validation image it compares the torch `Classifier`
(`runtime='torch'`, channels-last) with the torch-free `OnnxClassifier` (`load_onnx_classifier`): single-image p50/p95
with and without the domain check (interleaved), folder images/s (`predict_batch`, same threaded decoding), the raw
forward of each at batch 32 (the limit), peak RSS of a fresh process that loads the model and predicts one image, and
agreement (same labels and in_domain verdicts, largest probability difference).

fastai part:

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
    p.add_argument('--only', choices=['fastai', 'runtimes'], help='run one part (default: both)')
    p.add_argument('--datasets', default='hymenoptera_data,flowers', help='runtimes: data sets under shared/data')
    p.add_argument('--models', type=Path, help='runtimes: folder of trained safe models, one per data set (trained there when missing)')
    a = p.parse_args()
    os.chdir(ROOT)
    if a.only != 'runtimes': main_fastai(a)
    if a.only != 'fastai': main_runtimes(a, Path(tempfile.mkdtemp(prefix='bench-runtimes-')))


def main_fastai(a):
    "imgcls's torch `Classifier` against fastai's predict and get_preds."
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


# ---------------------------------------------------------------- torch vs ONNX Runtime (issue 14)

MEM_CODE = {  # a fresh process loads the model and predicts one image; prints its peak memory and whether torch was imported
    'torch': "from imgcls.inference import load_classifier\nclf = load_classifier(MODEL, runtime='torch')\np = clf.predict(IMAGE).label",
    'onnxruntime': "from imgcls.runtime import load_onnx_classifier\nclf = load_onnx_classifier(MODEL)\np = clf.predict(IMAGE).label",
}
MEM_WRAP = """import sys, time, json
from pathlib import Path
t0 = time.perf_counter()
MODEL, IMAGE = Path({model!r}), {image!r}
{code}
status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines() if ':' in l)
print(json.dumps(dict(label=p, seconds=time.perf_counter() - t0, torch_imported='torch' in sys.modules,
                      peak_rss_mb=int(status['VmHWM'].split()[0]) / 1024, rss_mb=int(status['VmRSS'].split()[0]) / 1024)))
"""

def process_memory(model_dir: Path, image: Path) -> dict:
    "Per runtime: peak RSS, seconds (imports included) and labels of a fresh process that loads the model and predicts one image."
    out = {}
    for name, code in MEM_CODE.items():
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        r = subprocess.run([sys.executable, '-c', MEM_WRAP.format(model=str(model_dir), image=str(image), code=code)],
                           capture_output=True, text=True, env=env, check=True)
        out[name] = json.loads(r.stdout.strip().splitlines()[-1])
    return out

def raw_forward(clf, oclf, bs: int = 32, n: int = 4) -> dict:
    "Images/s of the whole network alone (random batch of `bs`, best of `n`): torch NCHW and channels-last vs ONNX Runtime."
    size = clf.config['size']
    x = torch.randn(bs, 3, size, size)
    xcl, xn, model = x.contiguous(memory_format=torch.channels_last), x.numpy(), clf.model.eval()
    def best(fn):
        fn(); ts = []
        for _ in range(n): t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
        return bs / min(ts)
    with torch.inference_mode():
        r = dict(torch_nchw=best(lambda: model(x.contiguous())), torch_cl=best(lambda: model(xcl)))
    r['onnxruntime'] = best(lambda: oclf.model(xn))
    try: import openvino as ov   # measured when importable (not an imgcls dependency): e.g. PYTHONPATH=/tmp/ov
    except ImportError: return r
    req = ov.Core().compile_model(str(oclf.model.path), 'CPU', {'INFERENCE_NUM_THREADS': oclf.model.session.get_session_options().intra_op_num_threads,
                                                            'INFERENCE_PRECISION_HINT': 'f32'}).create_infer_request()
    r['openvino'] = best(lambda: req.infer({0: xn}))
    r['openvino_max_diff'] = float(np.abs(req.infer({0: xn})[0] - oclf.model(xn)[0]).max())
    return r

def with_domain_check(model_dir: Path, data: Path) -> Path:
    "`model_dir` when its model has a domain check, else a copy beside it with one fitted on its training/validation features (until `imgcls train` saves one)."
    if 'ood' in (json.loads((model_dir/'model.json').read_text()).get('extra_config') or {}): return model_dir
    out = model_dir.parent/(model_dir.name + '-checked')
    if (out/'model.json').exists(): return out
    from imgcls.inference import load_classifier
    from imgcls.modelfile import save_safe
    from imgcls.ood import fit_domain
    from imgcls.data import image_dataloaders
    clf = load_classifier(model_dir, runtime='torch')
    dls = image_dataloaders(data, check=False, num_workers=0)
    def feats(files):
        with torch.inference_mode(): return torch.cat([clf.model.body.eval()(torch.stack(ts)) for ts in batches(list(files), clf.tensor)])
    tensors, settings = fit_domain(feats(dls.train.items), feats(dls.valid.items)).state()
    save_safe(clf.model, out, extras=tensors, extra_config=settings)
    return out

def p50s(fns: dict, files: list) -> dict:
    "Single-image latency p50/p95 (ms) of each `fns[name](file)`, interleaved in rotating order, after 3 warm-up calls each, 50 ms apart."
    # 50 ms apart, as separate requests are: ONNX Runtime's threads spin for a while after each run, and a call made at once by
    # another session (or torch) would be timed competing with them (that made a check look -50% or +100% "more expensive")
    ts = {k: [] for k in fns}
    for f in files[:3]:
        for fn in fns.values(): fn(f)
    names = list(fns)
    for i, f in enumerate(files):
        for k in names[i % len(names):] + names[:i % len(names)]:
            time.sleep(0.05)
            t = time.perf_counter(); fns[k](f); ts[k].append(time.perf_counter() - t)
    return {k: (pct(v, 50), pct(v, 95)) for k, v in ts.items()}

def compare_runtimes(name: str, data: Path, model_dir: Path, n_single: int, repeats: int) -> dict:
    "torch vs ONNX Runtime on one trained model, with and without its domain check: latency, folder throughput, raw forward, agreement, memory."
    from imgcls.inference import load_classifier
    from imgcls.runtime import load_onnx_classifier
    from imgcls.data import image_dataloaders
    checked = with_domain_check(model_dir, data)
    plain = model_dir.parent/(model_dir.name + '-plain')      # the same network saved without the check
    if not (plain/'model.json').exists():
        from imgcls.modelfile import save_safe
        save_safe(load_classifier(model_dir, runtime='torch').model, plain)
    tch, ort = load_classifier(checked, runtime='torch'), load_classifier(checked)
    free, free_plain = load_onnx_classifier(checked), load_onnx_classifier(plain)
    tch_plain = load_classifier(plain, runtime='torch')
    files = list(map(Path, image_dataloaders(data, check=False, num_workers=0).valid.items))
    load0 = os.getloadavg()[0]
    lat = p50s(dict(torch=tch.predict, torch_nocheck=tch_plain.predict, onnx=free.predict, onnx_nocheck=free_plain.predict), files[:n_single])
    r_torch, r_ort = [], []
    for i in range(repeats):
        for which in (('torch', 'ort') if i % 2 == 0 else ('ort', 'torch')):
            t = time.perf_counter(); preds = (tch if which == 'torch' else free).predict_batch(files, top_k=len(tch.vocab))
            (r_torch if which == 'torch' else r_ort).append(time.perf_counter() - t)
            if which == 'torch': pt = preds
            else: po = preds
    pc = ort.predict_batch(files, top_k=len(tch.vocab))     # the torch Classifier on ONNX Runtime: the same numbers as the torch-free one
    vec = lambda ps: np.array([[dict(p.top_k)[c] for c in tch.vocab] for p in ps])
    raw = raw_forward(tch, free)
    mem = process_memory(checked, files[0])
    return dict(dataset=name, arch=tch.config['arch'], size=tch.config['size'], n_valid=len(files), n_single=min(n_single, len(files)),
                onnx_mb=(checked/'model.onnx').stat().st_size / 1e6, onnx_plain_mb=(plain/'model.onnx').stat().st_size / 1e6,
                latency_ms=lat, torch_img_s=len(files) / statistics.median(r_torch), ort_img_s=len(files) / statistics.median(r_ort),
                raw=raw, memory=mem, same_labels=sum(a.label == b.label for a, b in zip(pt, po)),
                same_in_domain=sum(a.in_domain == b.in_domain for a, b in zip(pt, po)), in_domain=sum(bool(p.in_domain) for p in po),
                max_prob_diff=float(np.abs(vec(pt) - vec(po)).max()), classifier_vs_free_diff=float(np.abs(vec(pc) - vec(po)).max()),
                load_avg=[round(load0, 2), round(os.getloadavg()[0], 2)])

def batches(files: list, tensor, bs: int = 32):
    "Yield lists of preprocessed images, `bs` at a time, decoded in threads while the caller runs the previous batch."
    from concurrent.futures import ThreadPoolExecutor
    chunks = [files[i:i+bs] for i in range(0, len(files), bs)]
    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as ex:
        pending = [ex.submit(tensor, f) for f in chunks[0]]
        for c in range(len(chunks)):
            done = [p.result() for p in pending]
            pending = [ex.submit(tensor, f) for f in chunks[c+1]] if c + 1 < len(chunks) else []
            yield done

def runtime_tables(results: list) -> str:
    "Markdown tables for `compare_runtimes` results."
    L = ['| data set (validation images) | | torch | ONNX Runtime | ORT vs torch |', '|---|---|---:|---:|---:|']
    for r in results:
        raw, m, lat = r['raw'], r['memory'], r['latency_ms']
        d = f"{r['dataset']} ({r['n_valid']}; load {r['load_avg'][0]}→{r['load_avg'][1]})"
        grow = lambda k: f"{lat[k][0] / lat[k + '_nocheck'][0] - 1:+.0%}"
        L += [f"| {d} | single image p50, with the domain check (ms) | {lat['torch'][0]:.1f} | {lat['onnx'][0]:.1f} | {lat['torch'][0]/lat['onnx'][0]:.1f}x faster |",
              f"| | single image p50 without it (ms); growth with it | {lat['torch_nocheck'][0]:.1f}; {grow('torch')} | {lat['onnx_nocheck'][0]:.1f}; {grow('onnx')} | |",
              f"| | single image p95, with the check (ms) | {lat['torch'][1]:.1f} | {lat['onnx'][1]:.1f} | |",
              f"| | folder (images/s, decoding included) | {r['torch_img_s']:.1f} | {r['ort_img_s']:.1f} | {r['ort_img_s']/r['torch_img_s']:.1f}x |",
              f"| | raw forward, batch 32 (images/s; the limit) | {raw['torch_cl']:.1f} (NCHW {raw['torch_nchw']:.1f}) | {raw['onnxruntime']:.1f} | {raw['onnxruntime']/raw['torch_cl']:.1f}x |",
              *([f"| | raw forward on OpenVINO (images/s; not used) | | {raw['openvino']:.1f} | {raw['openvino']/raw['torch_cl']:.1f}x (max logit diff {raw['openvino_max_diff']:.1e}) |"] if 'openvino' in raw else []),
              f"| | load + predict 1 image, fresh process: peak RSS (MB) | {m['torch']['peak_rss_mb']:.0f} | {m['onnxruntime']['peak_rss_mb']:.0f} | {m['torch']['peak_rss_mb']/m['onnxruntime']['peak_rss_mb']:.1f}x less |",
              f"| | same, seconds (imports included; torch imported: {m['torch']['torch_imported']} / {m['onnxruntime']['torch_imported']}) | {m['torch']['seconds']:.1f} | {m['onnxruntime']['seconds']:.1f} | |",
              f"| | model.onnx (MB, with / without the check) | | {r['onnx_mb']:.1f} / {r['onnx_plain_mb']:.1f} | |",
              f"| | agreement | | | labels {r['same_labels']}/{r['n_valid']}, in_domain {r['same_in_domain']}/{r['n_valid']}; max prob diff {r['max_prob_diff']:.1e} |"]
    return '\n'.join(L)

def main_runtimes(a, tmp: Path):
    "Train (or reuse) a model per data set and compare torch with ONNX Runtime on it."
    from imgcls.core import example_data
    from imgcls.models import DEFAULT_ARCH
    results = []
    for name in a.datasets.split(','):
        data = example_data(name)
        if data is None: sys.exit(f'needs shared/data/{name} (or $IMGCLS_DATA)')
        model_dir = (a.models/name) if a.models else tmp/name
        if not (model_dir/'model.json').exists():
            t = time.time()
            subprocess.run([sys.executable, '-c', 'from imgcls.cli import main; main()', 'train', str(data), '--arch', a.arch or DEFAULT_ARCH,
                            '--out', str(model_dir)], check=True, stdout=subprocess.DEVNULL)
            print(f'trained {name} in {time.time() - t:.0f} s', file=sys.stderr)
        results.append(compare_runtimes(name, data, model_dir, a.n_single, a.repeats))
        print(json.dumps(results[-1]), flush=True)
    print('\n' + runtime_tables(results))
    ok = all(r['same_labels'] == r['same_in_domain'] == r['n_valid'] and r['max_prob_diff'] <= 1e-4 for r in results)
    print(f"\nagreement (same labels and in_domain on every validation image, probabilities within 1e-4): {'yes' if ok else 'NO'}")
    grow = max(r['latency_ms'][k][0] / r['latency_ms'][k + '_nocheck'][0] - 1 for r in results for k in ('torch', 'onnx'))
    print(f"largest p50 growth with the domain check: {grow:+.0%} (target: at most +20%)")


if __name__ == '__main__': main()
