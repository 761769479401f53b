"`imgcls train` from the outside: bad input gets one line and a non-zero exit; a trained model loads in a fresh process."
import json, subprocess, sys
from pathlib import Path
import pytest
from imgcls.core import example_data, make_toy_images

IMGCLS = [sys.executable, '-c', 'from imgcls.cli import main; main()']

def imgcls(*args, cwd=None):
    return subprocess.run([*IMGCLS, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)

def one_line_error(r, *words):
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in r.stderr, r.stderr
    for w in words: assert w in lines[0], lines[0]

def test_missing_path(tmp_path): one_line_error(imgcls('train', tmp_path/'nope'), 'no such folder')

def test_empty_folder(tmp_path): one_line_error(imgcls('train', tmp_path), 'no images', 'empty')

def test_one_class(tmp_path):
    make_toy_images(tmp_path, 6, classes=('circle',))
    one_line_error(imgcls('train', tmp_path), 'only one class')

def test_folder_of_non_images(tmp_path):
    for c in 'ab': (tmp_path/c).mkdir(); (tmp_path/c/'notes.txt').write_text('not an image')
    one_line_error(imgcls('train', tmp_path), 'no images', 'notes.txt')

def test_images_that_do_not_decode(tmp_path):
    "Files named .jpg that are not images are moved to quarantine, not deleted, and training says so."
    make_toy_images(tmp_path/'data', 8)
    bad = tmp_path/'data'/'circle'/'fake.jpg'; bad.write_text('<html>')
    r = imgcls('train', tmp_path/'data', '--arch', 'efficientnet_lite0', '--size', '64', '--out', tmp_path/'m.pkl')
    assert r.returncode == 0, r.stderr
    assert not bad.exists() and (tmp_path/'data-quarantine'/'circle'/'fake.jpg').read_text() == '<html>'
    assert 'quarantine' in r.stdout

def test_file_instead_of_folder(tmp_path):
    f = tmp_path/'x.jpg'; f.write_bytes(b'x')
    one_line_error(imgcls('train', f), 'not a folder')

def test_unknown_arch(tmp_path):
    make_toy_images(tmp_path, 6)
    one_line_error(imgcls('train', tmp_path, '--arch', 'resnet_9000'), 'unknown arch')

def _train_and_reload(tmp_path, data, *extra):
    out = tmp_path/'model.pkl'
    r = imgcls('train', data, '--json', '--out', out, *extra)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert {'valid_accuracy', 'seconds', 'classes', 'model_path'} <= set(res)
    assert Path(res['model_path']) == out.absolute() and out.exists()
    assert 'validation accuracy' in r.stdout
    # a fresh process loads the export and predicts a known image
    img = next((Path(data)/res['classes'][0]).glob('*')) if (Path(data)/res['classes'][0]).is_dir() else None
    code = ('from fastai.learner import load_learner; import sys; l = load_learner(sys.argv[1]); '
            'print(l.predict(sys.argv[2])[0])')
    if img is None: img = next((Path(data)/'val'/res['classes'][0]).glob('*'))
    p = subprocess.run([sys.executable, '-c', code, str(out), str(img)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] in res['classes']
    return res

def test_train_toy_and_reload(tmp_path):
    data = make_toy_images(tmp_path/'shapes', 15)
    res = _train_and_reload(tmp_path, data, '--arch', 'efficientnet_lite0', '--size', '64')
    assert res['classes'] == ['circle', 'square'] and res['valid_accuracy'] >= 0.5

@pytest.mark.skipif(example_data('hymenoptera_data') is None, reason='real photos (../shared/data/hymenoptera_data) not present')
def test_train_ants_bees_default_arch(tmp_path):
    res = _train_and_reload(tmp_path, example_data('hymenoptera_data'))
    assert res['classes'] == ['ants', 'bees']
    assert res['valid_accuracy'] >= 0.92, res
