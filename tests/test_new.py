"`imgcls new` end to end: offline from a folder, and from 'search' (a 127.0.0.1 image server) to a running app."
import json, socket, subprocess, sys, time, urllib.request
import pytest
from fastcore.basics import AttrDict
from imgcls.core import example_data, image_files, make_toy_images
from imgcls.project import new_project
from imgserver import ImageServer

IMGCLS = [sys.executable, '-c', 'from imgcls.cli import main; main()']

@pytest.mark.skipif(example_data('flowers') is None, reason='real photos (../shared/data/flowers) not present')
def test_new_from_flowers_folder(tmp_path):
    r = subprocess.run([*IMGCLS, 'new', str(tmp_path/'flowers-app'), '--from', str(example_data('flowers')),
                        '--arch', 'efficientnet_lite0', '--json'], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res['classes'] == ['daisy', 'dandelion', 'rose', 'sunflower', 'tulip']
    assert res['n_train'] + res['n_valid'] == 4317
    assert res['valid_accuracy'] > 0.6, res
    for f in ['model.safetensors', 'model.json', 'report.html']: assert (tmp_path/'flowers-app'/f).exists(), f
    assert not (tmp_path/'flowers-app'/'model.pkl').exists()   # safe by default: no pickle written
    assert f"imgcls app {tmp_path/'flowers-app'/'model.safetensors'}" in r.stdout

def _free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def test_new_from_search_to_app(tmp_path):
    src = make_toy_images(tmp_path/'src', 14, classes=('circle', 'square'))
    with ImageServer({f.name: f.read_bytes() for f in image_files(src)}) as server:
        def search(term, max_images, **kw):
            shape = term.split()[0]
            return [AttrDict(url=server.url(f'/img/{f.name}'), thumbnail='', title=f.name, source=server.url('/'),
                             width=None, height=None, query=term) for f in image_files(src/shape)][:max_images]
        res = new_project(tmp_path/'shapes', 'circle=circle shapes', 'square=square shapes', n=14, arch='efficientnet_lite0',
                          search=search, allow_private=True)
    assert sorted(p.name for p in (tmp_path/'shapes'/'data').iterdir() if p.is_dir()) == ['circle', 'square']
    assert len(image_files(tmp_path/'shapes'/'data')) == 28
    assert (tmp_path/'shapes'/'data'/'manifest.csv').exists()
    port = _free_port()
    app = subprocess.Popen([*IMGCLS, 'app', res['model'], '--port', str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, page = time.time() + 180, None
        while time.time() < deadline and page is None:
            try: page = urllib.request.urlopen(f'http://127.0.0.1:{port}/', timeout=60).read().decode()
            except OSError: time.sleep(1)
        assert page is not None, 'the app did not answer'
        assert 'voila' in page.lower()
    finally:
        app.terminate(); app.wait(30)

def test_new_writes_examples_and_prints_share(tmp_path):
    "`imgcls new` leaves validation images in examples/ for the app, and prints the share command beside the app command."
    data = make_toy_images(tmp_path/'shapes', 15, classes=('circle', 'square', 'triangle'))
    proj = tmp_path/'shapes-app'
    r = subprocess.run([*IMGCLS, 'new', str(proj), '--from', str(data), '--arch', 'efficientnet_lite0', '--json'],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    ex = image_files(proj/'examples')
    assert len(ex) == 6 and {f.name.split('_', 1)[0] for f in ex} == {'circle', 'square', 'triangle'}, ex
    assert res['examples'] == str(proj/'examples')
    safe = proj/'model.safetensors'
    assert f'imgcls app {safe}' in r.stdout and f"imgcls share {safe} {proj/'space'}" in r.stdout
    assert res['share'] == f"imgcls share {safe} {proj/'space'}"
    assert any(l.startswith('estimate: ') for l in r.stdout.splitlines()) and 'look mislabeled' in r.stdout, r.stdout
    assert {'cv_accuracy', 'cv_std', 'label_issues'} <= set(res)
