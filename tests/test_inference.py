"""Inference outside the notebook: the `imgcls predict` command, downloads from a misbehaving 127.0.0.1 server,
tampered and malicious model files."""
import json, pickle, shutil, socket, subprocess, sys, threading, time, warnings
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from imgcls.core import ImgclsError, file_sha256, image_files, make_toy_images
from imgcls.inference import NOT_SURE, fetch_url, load_classifier
from imgcls.modelfile import save_safe, safe_paths


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    "A toy lite0 model in the safe format and as a fastai export (asked for), and its images."
    from imgcls.training import train
    tmp = tmp_path_factory.mktemp('inference')
    toy = make_toy_images(tmp/'toy', 12)
    res = train(toy, 'efficientnet_lite0', size=64, out=tmp/'safe'/'model.safetensors', export_pkl=True, verbose=False)
    safe = Path(res['model_path'])
    return dict(pkl=Path(res['pkl_path']), safe=safe, model=load_classifier(safe).model, toy=toy, tmp=tmp)


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
    "Folders and URLs work; an unreadable file is reported, the rest predicted, and the exit status is 1."
    srv, root = server
    shutil.copy(image_files(models['toy']/'square')[0], root/'sq.jpg')
    (root/'notes.txt').write_text('hello')
    r = imgcls('predict', models['pkl'], models['toy']/'circle', f'{srv.url}/img/sq.jpg', root/'notes.txt', '--threshold', '0.4', '--trust-pickle')
    assert r.returncode == 1
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 12 + 2
    assert 'sq.jpg' in lines[-2] and 'square' in lines[-2]
    assert lines[-1].endswith('error: not an image')
    assert r.stderr.strip() == 'imgcls predict: error: 1 of 14 images could not be read'   # no pickle warning either


def test_fetch_url_limits(server):
    "Downloads stop at the size cap, on a server that never answers, and on one that trickles."
    srv, root = server
    (root/'big.jpg').write_bytes(b'\xff' * 50_000)
    with pytest.raises(ImgclsError, match='too large'): fetch_url(f'{srv.url}/img/big.jpg', max_bytes=10_000)
    for path in ('/hang', '/trickle'):
        t = time.time()
        with pytest.raises(ImgclsError, match='could not download|took more than'): fetch_url(srv.url + path, timeout=1)
        assert time.time() - t < 5
    with pytest.raises(ImgclsError, match='not an http'): fetch_url('file:///etc/passwd')


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
