"""Safe by default (issue 13): a pickle whose unpickling would create a file is given to every entry point that loads a
model; without the opt-in nothing is created and the message names it. With the opt-in, a real fastai export loads.
(The report and cleaner entry points are covered in tests/test_interpret.py.)"""
import json, pickle, socket, subprocess, sys
from pathlib import Path
import pytest
from imgcls.core import ImgclsError, image_files, make_toy_images

IMGCLS = [sys.executable, '-c', 'from imgcls.cli import main; main()']

def imgcls(*args, timeout=300):
    return subprocess.run([*IMGCLS, *map(str, args)], capture_output=True, text=True, timeout=timeout)

class Evil:
    "Unpickling this creates the file `marker`."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (Path.touch, (self.marker,))

@pytest.fixture
def evil(tmp_path):
    "`(model.pkl, marker, image)`: a malicious 'model', the file its unpickling would create, and an image to predict."
    marker = tmp_path/'pwned'
    pkl = tmp_path/'model.pkl'
    pkl.write_bytes(pickle.dumps(Evil(marker)))
    img = image_files(make_toy_images(tmp_path/'toy', 1))[0]
    yield pkl, marker, img
    assert not marker.exists(), 'the pickle was opened'

def test_the_payload_is_real(tmp_path):
    "Unpickled, the test's pickle does create its marker: the tests below would notice if a loader opened it."
    marker = tmp_path/'pwned'
    pickle.loads(pickle.dumps(Evil(marker)))
    assert marker.exists()

def one_line_refusal(r, verb):
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f'imgcls {verb}: error: ') and '--trust-pickle' in lines[0], lines[0]
    assert 'Warning' not in r.stderr and 'Traceback' not in r.stderr

def test_predict_refuses(evil):
    pkl, marker, img = evil
    one_line_refusal(imgcls('predict', pkl, img), 'predict')

def _free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def test_app_refuses_before_serving(evil):
    "`imgcls app model.pkl` exits with status 1 and the message, without starting a server."
    pkl, marker, img = evil
    port = _free_port()
    r = imgcls('app', pkl, '--port', port)
    one_line_refusal(r, 'app')
    assert 'open http://' not in r.stdout
    with socket.socket() as s: assert s.connect_ex(('127.0.0.1', port)) != 0, 'something is listening'

def test_load_classifier_refuses(evil):
    from imgcls.inference import load_classifier
    pkl, marker, img = evil
    with pytest.raises(ImgclsError) as e: load_classifier(pkl)
    assert e.value.kind == 'unsafe' and 'allow_pickle=True' in e.value.detail
    for other in (pkl.with_suffix('.bin'), pkl.with_suffix('.pt')):   # any other name is read as the safe format
        other.write_bytes(pkl.read_bytes())
        with pytest.raises(ImgclsError): load_classifier(other)

def test_classify_app_refuses(evil, monkeypatch):
    "In a notebook (or the Voila page), the app shows why instead of opening the pickle; the page's env var cannot opt in by accident."
    from imgcls.app import classify_app, ENV_TRUST_PICKLE
    pkl, marker, img = evil
    monkeypatch.delenv(ENV_TRUST_PICKLE, raising=False)
    w = classify_app(pkl)
    assert 'Cannot load the model' in w.value and 'allow_pickle=True' in w.value
    monkeypatch.setenv(ENV_TRUST_PICKLE, '0')
    assert 'allow_pickle=True' in classify_app(pkl).value

def test_new_project_never_opens_an_old_pickle(tmp_path):
    "A project folder holding a model.pkl (as older imgcls wrote) is resumed without opening it."
    from imgcls.project import new_project
    marker, proj = tmp_path/'pwned', tmp_path/'shapes'
    proj.mkdir()
    (proj/'model.pkl').write_bytes(pickle.dumps(Evil(marker)))
    res = new_project(proj, source=make_toy_images(tmp_path/'toy', 10), arch='efficientnet_lite0')
    assert not marker.exists()
    assert res['model'] == str(proj/'model.safetensors') and res['app'] == f"imgcls app {proj/'model.safetensors'}"

@pytest.fixture(scope='module')
def exported(toy_model):
    "The session's toy model (trained with export_pkl=True): the safe pair and fastai's export beside it, and its images."
    res, toy = toy_model
    return res, image_files(toy)

def test_trusted_pickle_loads(exported):
    "With the opt-in, a real fastai export loads and predicts as the safe model does, and no pickle warning reaches the user."
    from imgcls.inference import load_classifier
    res, imgs = exported
    pkl, safe = Path(res['pkl_path']), Path(res['model_path'])
    assert pkl.exists() and safe.exists() and safe.with_suffix('.json').exists()
    a, b = load_classifier(pkl, allow_pickle=True), load_classifier(safe)
    pa, pb = a.predict_batch(imgs[:4]), b.predict_batch(imgs[:4])
    assert [p.label for p in pa] == [p.label for p in pb]
    assert all(abs(x.probability - y.probability) < 1e-4 for x, y in zip(pa, pb))
    r = imgcls('predict', pkl, imgs[0], '--trust-pickle', '--json')
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == '', r.stderr            # fastai's "insecure pickle" warning is not shown
    assert json.loads(r.stdout.splitlines()[-1])['predictions'][0]['label'] == pa[0].label
    one_line_refusal(imgcls('predict', pkl, imgs[0]), 'predict')   # the same file, without the opt-in
