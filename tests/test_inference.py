"""Inference outside the notebook: the `imgcls predict` command, downloads from a misbehaving 127.0.0.1 server,
tampered and malicious model files."""
import json, pickle, shutil, subprocess, sys, threading, time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from imgcls.core import ImgclsError, file_sha256, image_files
from imgcls.fetch import fetch
from imgcls.inference import NOT_SURE, load_classifier
from imgcls.runtime import NONE_OF_THESE, load_onnx_classifier
from imgcls.modelfile import save_safe, safe_paths


@pytest.fixture(scope='module')
def models(toy_model):
    "The session's toy lite0 model in the safe format and as a fastai export (asked for), and its images."
    res, toy = toy_model
    safe = Path(res['model_path'])
    return dict(pkl=Path(res['pkl_path']), safe=safe, model=load_classifier(safe).model, toy=toy)


def imgcls(*args, timeout=180):
    exe = Path(sys.executable).parent/'imgcls'
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-c', 'from imgcls.cli import main; main()']
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)


class Server:
    "A 127.0.0.1 server: /img/NAME serves files from `root`; /hang never answers; /trickle sends a byte every 0.2 s."
    def __init__(self, root: Path):
        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *a): pass
            def do_GET(self):
                if self.path.startswith('/hang'): time.sleep(30); return
                if self.path.startswith('/trickle'):
                    self.send_response(200); self.send_header('Content-Type', 'image/jpeg'); self.end_headers()
                    try:
                        for _ in range(100): self.wfile.write(b'x'); self.wfile.flush(); time.sleep(0.2)
                    except OSError: pass
                    return
                if self.path.startswith('/img/'): self.path = self.path[4:]
                super().do_GET()
        class Srv(ThreadingHTTPServer):
            daemon_threads = True
            def handle_error(self, *a): pass
        self.srv = Srv(('127.0.0.1', 0), partial(Handler, directory=str(root)))
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = f'http://127.0.0.1:{self.srv.server_port}'
    def close(self): self.srv.shutdown()


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path); yield s, tmp_path; s.close()


def test_cli_predict_json(models):
    "imgcls predict: one line per image; --json adds the predictions as the last line."
    imgs = image_files(models['toy'])[:2]
    r = imgcls('predict', models['safe'], *imgs, '--top-k', 1, '--json')
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert [p['image'] for p in out['predictions']] == [str(f) for f in imgs]
    assert all(p['label'] in ('circle', 'square') and len(p['top_k']) == 1 for p in out['predictions'])
    assert [p['label'] for p in out['predictions']] == [f.parent.name for f in imgs]


def test_cli_predict_folder_url_and_bad_file(models, server):
    "Folders work; a URL on 127.0.0.1 is refused (as downloads are) and an unreadable file is reported, the rest predicted, exit status 1."
    srv, root = server
    shutil.copy(image_files(models['toy']/'square')[0], root/'sq.jpg')
    (root/'notes.txt').write_text('hello')
    r = imgcls('predict', models['pkl'], models['toy']/'circle', f'{srv.url}/img/sq.jpg', root/'notes.txt', '--threshold', '0.4', '--trust-pickle')
    assert r.returncode == 1
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 12 + 2
    assert 'sq.jpg' in lines[-2] and 'not a public address' in lines[-2]
    assert lines[-1].endswith('error: not an image')
    assert r.stderr.strip() == 'imgcls predict: error: 2 of 14 images could not be read'   # no pickle warning either


def test_fetch_url_limits(server):
    "Downloads stop at the size cap, on a server that never answers, and on one that trickles."
    srv, root = server
    (root/'big.jpg').write_bytes(b'\xff' * 50_000)
    with pytest.raises(ImgclsError, match='too large'): fetch(f'{srv.url}/img/big.jpg', max_bytes=10_000, allow_private=True)
    for path in ('/hang', '/trickle'):
        t = time.time()
        with pytest.raises(ImgclsError) as e: fetch(srv.url + path, timeout=1, max_time=1, allow_private=True)
        assert e.value.kind in ('timeout', 'truncated', 'connection'), e.value
        assert time.time() - t < 5
    with pytest.raises(ImgclsError) as e: fetch('file:///etc/passwd')
    assert e.value.kind in ('invalid', 'blocked')


def test_eval_mode_and_batch_consistency(models):
    "A model left in train mode predicts as in eval mode; one image alone gets the probabilities it gets in a batch."
    clf = load_classifier(models['safe'])
    imgs = image_files(models['toy'])
    ref = clf.predict_batch(imgs, top_k=2)
    clf.model.train()
    alone = [clf.predict(np.asarray(Image.open(f).convert('RGB')) if f.suffix == '.png' else f, top_k=2) for f in imgs[:3]]
    assert not clf.model.training
    for a, b in zip(alone, ref): assert a.label == b.label and abs(a.probability - b.probability) < 1e-5
    assert clf.predict(imgs[0], threshold=1.0).label == NOT_SURE


def test_tampered_safe_model_is_refused(models, tmp_path):
    "Editing the weights or the JSON of a safe model makes loading fail with an ImgclsError."
    for what in ('weights', 'json', 'version'):
        w, j = safe_paths(save_safe(models['model'], tmp_path/what/'m.safetensors'))
        meta = json.loads(j.read_text())
        if what == 'weights': b = bytearray(w.read_bytes()); b[-10] ^= 0xFF; w.write_bytes(bytes(b))
        if what == 'json': meta['size'] = 32; j.write_text(json.dumps(meta))
        if what == 'version': meta['format_version'] = 99; j.write_text(json.dumps(meta))
        with pytest.raises(ImgclsError, match={'weights': 'SHA-256', 'json': 'does not match', 'version': 'upgrade imgcls'}[what]):
            load_classifier(w)


class Evil:
    "Unpickling this creates the file `marker`."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (Path.touch, (self.marker,))


def test_malicious_pickle_is_never_run(models, tmp_path):
    "A pickle posing as safe weights, or given where pickles are refused, is rejected and its code never runs."
    marker = tmp_path/'pwned'
    evil_dir = tmp_path/'evil'
    w, j = safe_paths(save_safe(models['model'], evil_dir))
    w.write_bytes(pickle.dumps(Evil(marker)))
    j.write_text(json.dumps({**json.loads(j.read_text()), 'sha256': file_sha256(w)}))
    with pytest.raises(ImgclsError, match='not a safetensors file'): load_classifier(evil_dir)
    evil_pkl = tmp_path/'evil.pkl'
    evil_pkl.write_bytes(pickle.dumps(Evil(marker)))
    with pytest.raises(ImgclsError, match='--trust-pickle'): load_classifier(evil_pkl)
    r = imgcls('predict', evil_dir, image_files(models['toy'])[0])
    assert r.returncode == 1 and 'not a safetensors file' in r.stderr
    assert not marker.exists()
    pickle.loads(evil_pkl.read_bytes())          # the payload is real: unpickled, it runs
    assert marker.exists()


@pytest.fixture(scope='module')
def ab_models(tmp_path_factory):
    "An ants/bees lite0 model (40 training photos) saved three ways: with a domain check and model.onnx, without either (as older imgcls did), and its cat."
    from imgcls.core import example_data
    from imgcls.ood import fit_domain
    from imgcls.training import train
    ab = example_data('hymenoptera_data')
    if ab is None: pytest.skip('needs shared/data/hymenoptera_data')
    tmp = tmp_path_factory.mktemp('ab')
    for c in ('ants', 'bees'):
        (tmp/'data'/c).mkdir(parents=True)
        for f in image_files(ab/'train'/c)[:20]: shutil.copy(f, tmp/'data'/c/f.name)
    res = train(tmp/'data', 'efficientnet_lite0', top_epochs=0, out=tmp/'trained', verbose=False)
    clf = load_classifier(res['model_path'], runtime='torch')
    def feats(files):
        with torch.inference_mode(): return clf.model.body.eval()(torch.stack([clf.tensor(f) for f in files]))
    val = image_files(ab/'val')
    tensors, settings = fit_domain(feats(image_files(tmp/'data')), feats(val[::6])).state()
    checked = save_safe(clf.model, tmp/'checked', extras=tensors, extra_config=settings)
    old = save_safe(clf.model, tmp/'old', onnx=False)
    import skimage
    Image.fromarray(skimage.data.chelsea()).save(tmp/'cat.jpg', quality=90)
    return dict(checked=checked, old=old, val=val, cat=tmp/'cat.jpg')


def test_onnx_agrees_with_torch_on_real_photos(ab_models):
    "On every ants/bees validation photo: ONNX Runtime (model.onnx) and torch give the same labels, probabilities within 1e-4, the same domain verdicts."
    imgs = ab_models['val'] + [ab_models['cat']]
    ort, tch = load_classifier(ab_models['checked']), load_classifier(ab_models['checked'], runtime='torch')
    assert ort.forward.session.path.name == 'model.onnx' and tch.forward is tch.graph
    free = load_onnx_classifier(ab_models['checked'])
    a, b, c = (x.predict_batch(imgs, top_k=2) for x in (ort, tch, free))
    assert [p.label for p in a] == [p.label for p in b] == [p.label for p in c]
    assert [p.in_domain for p in a] == [p.in_domain for p in b] == [p.in_domain for p in c]
    diff = max(abs(dict(p.top_k)[k] - dict(q.top_k)[k]) for p, q in zip(a, b) for k in dict(p.top_k))
    assert diff <= 1e-4, diff
    assert a[-1].label == NONE_OF_THESE and a[-1].in_domain is False            # the cat
    assert sum(p.in_domain for p in a[:-1]) >= 0.85 * len(a[:-1])


def test_old_model_predicts_as_before(ab_models):
    "A model saved without a domain check or model.onnx: no in_domain, JSON rows as before; the torch-free loader says it has no ONNX file."
    clf = load_classifier(ab_models['old'])
    p = clf.predict(ab_models['cat'])
    assert p.in_domain is None and p.label in clf.vocab
    assert list(p.to_dict()) == ['label', 'probability', 'top_k']
    with pytest.raises(ImgclsError) as e: load_onnx_classifier(ab_models['old'])
    assert e.value.kind == 'missing'
    r = imgcls('predict', ab_models['old'], ab_models['cat'], '--json')
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout.splitlines()[-1])['predictions'][0]) == {'image', 'label', 'probability', 'top_k'}


def test_cli_none_of_these_and_any_class(ab_models):
    "`imgcls predict --json`: in_domain beside label; `--any-class` turns the check off."
    r = imgcls('predict', ab_models['checked'], ab_models['cat'], ab_models['val'][0], '--json')
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout.splitlines()[-1])['predictions']
    assert list(rows[0])[:3] == ['image', 'label', 'in_domain'] and (rows[0]['label'], rows[0]['in_domain']) == (NONE_OF_THESE, False)
    assert 'none of these   (closest: ' in r.stdout.splitlines()[0]
    r = imgcls('predict', ab_models['checked'], ab_models['cat'], '--json', '--any-class')
    row = json.loads(r.stdout.splitlines()[-1])['predictions'][0]
    assert row['label'] in ('ants', 'bees') and 'in_domain' not in row


def test_damaged_onnx_falls_back(ab_models, tmp_path):
    "A model.onnx that no longer matches its hash is not used: one line, then torch; the torch-free loader refuses it."
    d = tmp_path/'m'
    shutil.copytree(ab_models['checked'], d)
    b = bytearray((d/'model.onnx').read_bytes()); b[-20] ^= 0xFF; (d/'model.onnx').write_bytes(bytes(b))
    with pytest.raises(ImgclsError) as e: load_onnx_classifier(d)
    assert e.value.kind == 'tampered'
    r = imgcls('predict', d, ab_models['cat'], '--json')
    assert r.returncode == 0, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and 'ignoring model.onnx' in r.stderr, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])['predictions'][0]['label'] == NONE_OF_THESE


def test_torch_free_process_memory(ab_models):
    "A fresh process loads the model and predicts one image: without torch (model.onnx) it needs a fraction of the memory."
    code = """import sys, json
from imgcls.{mod} import {fn}
p = {fn}({path!r}).predict({img!r})
st = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines() if ':' in l)
print(json.dumps(dict(label=p.label, torch='torch' in sys.modules, peak_mb=int(st['VmHWM'].split()[0]) / 1024)))"""
    out = {}
    for name, mod, fn in (('onnx', 'runtime', 'load_onnx_classifier'), ('torch', 'inference', 'load_classifier')):
        r = subprocess.run([sys.executable, '-c', code.format(mod=mod, fn=fn, path=str(ab_models['checked']), img=str(ab_models['val'][0]))],
                           capture_output=True, text=True, timeout=300, env={**__import__('os').environ, 'IMGCLS_RUNTIME': 'torch' if name == 'torch' else 'auto'})
        assert r.returncode == 0, r.stderr
        out[name] = json.loads(r.stdout.splitlines()[-1])
    print(out)
    assert out['onnx']['torch'] is False and out['torch']['torch'] is True
    assert out['onnx']['label'] == out['torch']['label']
    assert out['onnx']['peak_mb'] < 0.6 * out['torch']['peak_mb'], out
